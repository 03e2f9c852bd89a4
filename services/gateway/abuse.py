"""Abuse protection (05-24..05-28): rate limits, temporary blocks, anonymiser networks.

Limits are token buckets kept in memory, one per client (IP address plus device fingerprint) and
one per signed-in account. A key refused ``BLOCK_AFTER_EXCESSES`` times within a minute is
blocked for ``BLOCK_SECONDS``. Each gateway instance keeps its own buckets: with N instances
behind a balancer a client gets at most N times the limit, which is fine for the purpose (stop
robots and floods, not meter usage).

Requests from networks listed in the anonymiser list (one CIDR a line, data not code) are refused.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from nameko.extensions import SharedExtension

from services.common.config import ROOT, settings
from services.gateway.errors import AnonymizerRefused, RateLimited, TemporarilyBlocked

log = logging.getLogger(__name__)

EXCESS_WINDOW_SECONDS = 60.0
DEFAULT_ANONYMIZER_LIST = "services/gateway/anonymizers.txt"


# -- token buckets ------------------------------------------------------------------------------
@dataclass
class TokenBucket:
    capacity: float
    refill_per_second: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take one token: 0.0 if allowed, else the seconds until one is available."""
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.refill_per_second)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        if self.refill_per_second <= 0:
            return float("inf")
        return (1.0 - self.tokens) / self.refill_per_second

    def full_at(self, now: float) -> bool:
        elapsed = max(0.0, now - self.updated)
        return self.tokens + elapsed * self.refill_per_second >= self.capacity


@dataclass
class _KeyState:
    bucket: TokenBucket
    excesses: deque = field(default_factory=deque)
    blocked_until: float = 0.0


class RateLimiter:
    """Token buckets by key, with a temporary block after repeated excess."""

    def __init__(
        self,
        per_minute: float,
        burst: int,
        block_after: int,
        block_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ):
        if per_minute <= 0 or burst < 1:
            raise ValueError("rate limit needs per_minute > 0 and burst >= 1")
        self.refill = per_minute / 60.0
        self.burst = burst
        self.block_after = max(1, int(block_after))
        self.block_seconds = float(block_seconds)
        self.clock = clock
        self.max_keys = max_keys
        self._keys: dict[str, _KeyState] = {}

    def check(self, key: str, what: str = "requests") -> None:
        """Count one request for ``key``; raise RateLimited or TemporarilyBlocked when refused."""
        now = self.clock()
        state = self._keys.get(key)
        if state is None:
            if len(self._keys) >= self.max_keys:
                self._prune(now)
            state = self._keys[key] = _KeyState(
                TokenBucket(self.burst, self.refill, float(self.burst), now)
            )
        if state.blocked_until > now:
            raise TemporarilyBlocked(
                f"too many {what}; temporarily blocked", state.blocked_until - now
            )
        wait = state.bucket.take(now)
        if wait == 0.0:
            return
        state.excesses.append(now)
        while state.excesses and state.excesses[0] < now - EXCESS_WINDOW_SECONDS:
            state.excesses.popleft()
        if len(state.excesses) >= self.block_after:
            state.excesses.clear()
            state.blocked_until = now + self.block_seconds
            raise TemporarilyBlocked(f"too many {what}; temporarily blocked", self.block_seconds)
        raise RateLimited(f"too many {what}; slow down", wait)

    def _prune(self, now: float) -> None:
        # keys whose bucket has refilled and that are not blocked carry no information
        idle = [
            k for k, s in self._keys.items() if s.blocked_until <= now and s.bucket.full_at(now)
        ]
        for k in idle:
            del self._keys[k]
        if len(self._keys) >= self.max_keys:  # still full under a flood: forget the oldest
            for k in list(self._keys)[: len(self._keys) // 2]:
                del self._keys[k]

    def __len__(self) -> int:
        return len(self._keys)


# -- networks -----------------------------------------------------------------------------------
def parse_ip(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address, with IPv4-mapped IPv6 (::ffff:a.b.c.d) turned into IPv4; None if invalid."""
    if not value:
        return None
    try:
        ip = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class NetworkList:
    """A set of CIDR networks with a membership test costing one set lookup per prefix length."""

    def __init__(self, networks: Iterable[str] = ()):
        # (version, prefix length) -> set of network addresses as integers
        self._by_prefix: dict[tuple[int, int], set[int]] = {}
        self.count = 0
        for net in networks:
            self.add(net)

    def add(self, cidr: str) -> None:
        network = ipaddress.ip_network(cidr.strip(), strict=False)
        if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped:
            mapped = network.network_address.ipv4_mapped
            network = ipaddress.ip_network(f"{mapped}/{max(0, network.prefixlen - 96)}")
        key = (network.version, network.prefixlen)
        self._by_prefix.setdefault(key, set()).add(int(network.network_address))
        self.count += 1

    def __contains__(self, address: str | ipaddress._BaseAddress | None) -> bool:
        ip = parse_ip(address) if isinstance(address, str) or address is None else address
        if ip is None:
            return False
        value, bits = int(ip), ip.max_prefixlen
        for (version, prefix), networks in self._by_prefix.items():
            if version != ip.version:
                continue
            mask = ((1 << prefix) - 1) << (bits - prefix) if prefix else 0
            if value & mask in networks:
                return True
        return False

    def __len__(self) -> int:
        return self.count

    @classmethod
    def from_lines(cls, lines: Iterable[str], source: str = "list") -> "NetworkList":
        result = cls()
        for number, line in enumerate(lines, 1):
            entry = line.split("#", 1)[0].strip()
            if not entry:
                continue
            try:
                result.add(entry)
            except ValueError:
                log.error("%s line %d: %r is not a CIDR network; ignored", source, number, entry)
        return result

    @classmethod
    def from_file(cls, path: str | Path) -> "NetworkList":
        with open(path, encoding="utf-8") as fh:
            return cls.from_lines(fh, str(path))


def resolve_path(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else ROOT / p


def client_address(remote_addr: str | None, forwarded_for: str | None, trusted: NetworkList) -> str:
    """The client's address: REMOTE_ADDR, or from X-Forwarded-For when the peer is trusted.

    Walks X-Forwarded-For from the right (the entries our own proxies appended) and takes the
    first address that is not one of our proxies; anything further left is client-supplied.
    """
    peer = parse_ip(remote_addr)
    address = str(peer) if peer is not None else (remote_addr or "")
    if peer is None or peer not in trusted or not forwarded_for:
        return address
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        ip = parse_ip(hop)
        if ip is None:
            return address  # garbage in the chain: do not trust anything beyond it
        address = str(ip)
        if ip not in trusted:
            return address
    return address


# -- the nameko extension ------------------------------------------------------------------------
class AbuseGuard(SharedExtension):
    """Rate limits and network refusal shared by every route of one gateway container."""

    def setup(self) -> None:
        s = settings(self.container.config)
        per_minute = float(s.get("RATE_LIMIT_PER_MINUTE", 120))
        burst = int(s.get("RATE_BURST", 30))
        block_after = int(s.get("BLOCK_AFTER_EXCESSES", 20))
        block_seconds = float(s.get("BLOCK_SECONDS", 600))
        self.clients = RateLimiter(per_minute, burst, block_after, block_seconds)
        self.accounts = RateLimiter(per_minute, burst, block_after, block_seconds)
        self.trusted = NetworkList(_as_list(s.get("TRUSTED_PROXIES")))
        path = resolve_path(str(s.get("ANONYMIZER_LIST") or DEFAULT_ANONYMIZER_LIST))
        try:
            self.anonymizers = NetworkList.from_file(path)
        except OSError as exc:
            # refusing to start would take the portal down over a data file; say it loudly
            log.error("anonymiser list %s unreadable (%s): no network is refused", path, exc)
            self.anonymizers = NetworkList()
        log.info("anonymiser list %s: %d networks", path, len(self.anonymizers))

    def client_address(self, remote_addr: str | None, forwarded_for: str | None) -> str:
        return client_address(remote_addr, forwarded_for, self.trusted)

    def check_network(self, address: str) -> None:
        if address in self.anonymizers:
            raise AnonymizerRefused(
                "requests through anonymising networks (VPN, proxy, Tor) are not accepted; "
                "connect directly and try again"
            )

    def check_client(self, address: str, fingerprint: str | None) -> None:
        self.clients.check(f"{address}|{fingerprint or ''}")

    def check_account(self, actor_id: str) -> None:
        self.accounts.check(actor_id)


def _as_list(value) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [v for v in (p.strip() for p in value.split(",")) if v]
    return [str(v) for v in value]
