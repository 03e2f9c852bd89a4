"""Idempotency-Key for mutating requests: the same key gives the same result once.

Keys are scoped by actor (one user's key never replays another user's answer). The first request
with a key claims it (state ``pending``), runs, and stores its answer (``done``); a repeat with
the same method, path and body gets the stored answer; a repeat with a different request is
refused (422 IDEMPOTENCY_KEY_REUSED); a repeat while the first still runs gets 409
IDEMPOTENCY_IN_PROGRESS. Answers of 5xx are not stored, so the client may retry. Keys live
``IDEMPOTENCY_TTL_SECONDS`` (24 h).

Service methods that take ``idempotency_key`` get the (scoped) key as well, so a retry through
another gateway or straight over RPC is safe too.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from nameko.extensions import SharedExtension

from services.common.config import settings
from services.common.db import DatabaseAccess, engine_for
from services.gateway import storage
from services.gateway.errors import IdempotencyInProgress, IdempotencyKeyReused, InvalidParameter

KEY_RE = re.compile(r"^[\x21-\x7e]{1,200}$")
HEADER = "Idempotency-Key"


def check_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not KEY_RE.fullmatch(value):
        raise InvalidParameter(
            f"{HEADER} must be 1 to 200 visible ASCII characters (a UUID is a good choice)", HEADER
        )
    return value


def request_hash(method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), b"\n", path.encode(), b"\n", body):
        digest.update(part)
    return digest.hexdigest()


@dataclass(frozen=True)
class Stored:
    status: int
    body: str


class IdempotencyStore(SharedExtension):
    def setup(self) -> None:
        s = settings(self.container.config)
        self.db = DatabaseAccess(engine_for(self.container.config), "gateway")
        # a pending key older than this belongs to a request that died: let a retry take it
        self.stale_after = float(s.get("RPC_TIMEOUT_SECONDS", 10)) * 3

    def begin(self, scope: str, key: str, digest: str) -> Stored | None:
        """Claim the key (None: go ahead) or return the stored answer of the first request."""
        with self.db.transaction() as tx:
            if storage.claim_idempotency_key(tx, scope, key, digest):
                return None
            row = storage.get_idempotency_key(tx, scope, key)
            if row is None:  # finished and released between our two statements: claim again
                storage.claim_idempotency_key(tx, scope, key, digest)
                return None
            if row.request_hash != digest:
                raise IdempotencyKeyReused(
                    f"this {HEADER} was used for a different request", HEADER
                )
            if row.state == "done":
                return Stored(int(row.status), row.body)
            if float(row.age) < self.stale_after:
                raise IdempotencyInProgress(
                    f"a request with this {HEADER} is still being handled; retry shortly", HEADER
                )
            storage.restart_idempotency_key(tx, scope, key)
            return None

    def finish(self, scope: str, key: str, status: int, body: str) -> None:
        with self.db.transaction() as tx:
            if status >= 500:
                storage.release_idempotency_key(tx, scope, key)
            else:
                storage.finish_idempotency_key(tx, scope, key, status, body)

    def release(self, scope: str, key: str) -> None:
        with self.db.transaction() as tx:
            storage.release_idempotency_key(tx, scope, key)
