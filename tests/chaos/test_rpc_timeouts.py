"""RPC calls between services that cannot be answered in time fail with a clear error instead of
hanging (issue 9). "Stopped" here is what a crashed service leaves behind: its RPC queue still
bound, nobody consuming it. (The gateway's own 504 is in tests/integration/test_gateway.py.)"""

from __future__ import annotations

import copy
from unittest import mock

import pytest
from kombu import Connection, Exchange, Queue

from services.allocation.service import AllocationService
from services.applications.service import ApplicationsService
from services.common.errors import NotFound, UpstreamTimeout

TIMEOUT = 1


@pytest.fixture
def registry_stopped(kezek_config):
    """The registry's RPC queue with no consumer: calls to it are routed and never answered."""
    queue = Queue("rpc-registry", exchange=Exchange("nameko-rpc", type="topic", durable=True),
                  routing_key="registry.*", durable=True)
    with Connection(kezek_config["AMQP_URI"]) as conn:
        channel = conn.channel()
        queue(channel).declare()
        yield
        queue(channel).purge()  # calls nobody will answer: a later registry must not get them
        channel.close()


@pytest.fixture
def services(kezek_config, start_services, registry_stopped):
    config = copy.deepcopy(kezek_config)
    config["KEZEK"]["RPC_TIMEOUT_SECONDS"] = TIMEOUT
    start_services(AllocationService, ApplicationsService, config=config)


def test_a_call_to_a_stopped_service_fails_with_upstream_timeout(services, rpc):
    staff = {"id": "staff:+77020000001", "role": "staff", "organization_id": 7,
             "request_id": None}
    with rpc(timeout=30) as cluster:
        # allocation asks the registry for the group
        with pytest.raises(UpstreamTimeout) as raised:
            cluster.allocation.release_places(7, 31, 1, staff)
        assert raised.value.code == "UPSTREAM_TIMEOUT"
        assert raised.value.status == 504
        assert "registry.get_group did not answer within 1s" in raised.value.message

        # applications asks the registry to check the preferred organisations
        parent = {"id": "applicant:+77020000002", "role": "applicant", "organization_id": None,
                  "request_id": None}
        with pytest.raises(UpstreamTimeout) as raised:
            cluster.applications.file_application(new_application(), parent)
        assert "registry.check_preferences did not answer" in raised.value.message

        # and both keep serving what needs no other service
        with pytest.raises(NotFound):
            cluster.allocation.get_direction("D999999999")
        assert cluster.applications.benefit_categories()


def new_application() -> dict:
    import datetime as dt

    from services.applications.domain import make_iin

    birth = dt.date(dt.date.today().year - 3, 2, 1)
    serial = next(s for s in range(10000) if _valid(make_iin, birth, s))
    return {
        "applicant": {"iin": "900101301233", "full_name": "Серікбаев Болат",
                      "phone": "+77020000002"},
        "child": {"iin": make_iin(birth, "F", serial), "full_name": "Серікбаева Айгерім",
                  "birth_date": birth.isoformat()},
        "queue_type": "general", "language": "kk", "district": "Timeout",
        "preferred_organizations": [1],
        "desired_start": dt.date(birth.year + 5, 9, 1).isoformat(), "benefit": None,
    }


def _valid(make_iin, birth, serial) -> bool:
    try:
        make_iin(birth, "F", serial)
        return True
    except ValueError:
        return False


def test_a_reply_that_cannot_be_sent_does_not_stop_the_service(kezek_config, start_services,
                                                                 rpc):
    """While the broker restarts, a reply may fail to go out: that call times out for its
    caller, and the service goes on serving (nameko's own rpc kills the service instead)."""
    from nameko.exceptions import RpcTimeout

    from services.common.rpc_channel import ChannelLost, ReplyChannel

    start_services(AllocationService)
    real = ReplyChannel.reply
    failures = []

    def broker_gone(self, *args, **kwargs):
        if not failures:
            failures.append(1)
            raise ChannelLost("could not publish to the broker: ECONNREFUSED")
        return real(self, *args, **kwargs)

    with mock.patch.object(ReplyChannel, "reply", broker_gone):
        with rpc(timeout=3) as cluster:
            with pytest.raises(RpcTimeout):
                cluster.allocation.get_direction("D999999998")
        with rpc(timeout=10) as cluster:
            with pytest.raises(NotFound):
                cluster.allocation.get_direction("D999999998")
    assert failures == [1]
