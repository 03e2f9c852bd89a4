"""CIDR matching of the anonymiser list and the client address behind trusted proxies."""

import pytest

from services.gateway.abuse import (
    DEFAULT_ANONYMIZER_LIST,
    NetworkList,
    client_address,
    resolve_path,
)


def test_membership_v4_v6_and_mapped():
    nets = NetworkList(["198.51.100.0/24", "203.0.113.7/32", "2001:db8:dead::/48", "10.0.0.0/8"])
    assert "198.51.100.1" in nets
    assert "198.51.100.255" in nets
    assert "198.51.101.1" not in nets
    assert "203.0.113.7" in nets
    assert "203.0.113.8" not in nets
    assert "10.200.3.4" in nets
    assert "2001:db8:dead:beef::1" in nets
    assert "2001:db8:beef::1" not in nets
    assert "::ffff:198.51.100.9" in nets  # an IPv4 client seen on a dual-stack socket
    assert "not an address" not in nets
    assert None not in nets


def test_list_file_format_comments_blank_and_bad_lines():
    nets = NetworkList.from_lines(
        [
            "# a comment",
            "",
            "192.0.2.0/24  # documentation range",
            "bogus",
            "300.1.1.1/8",
            "192.0.2.77/24",  # host bits set: taken as its network
        ]
    )
    assert len(nets) == 2
    assert "192.0.2.5" in nets


def test_the_shipped_list_refuses_the_documentation_network():
    nets = NetworkList.from_file(resolve_path(DEFAULT_ANONYMIZER_LIST))
    assert "198.51.100.23" in nets
    assert "8.8.8.8" not in nets


def test_an_empty_list_refuses_nobody():
    assert "1.2.3.4" not in NetworkList()


TRUSTED = NetworkList(["127.0.0.1/32", "10.0.0.0/8"])


@pytest.mark.parametrize(
    "remote,xff,expected",
    [
        ("192.0.2.1", None, "192.0.2.1"),
        ("192.0.2.1", "198.51.100.7", "192.0.2.1"),  # untrusted peer: header ignored
        ("127.0.0.1", "198.51.100.7", "198.51.100.7"),
        ("127.0.0.1", "1.1.1.1, 198.51.100.7", "198.51.100.7"),  # left part is client-supplied
        ("127.0.0.1", "198.51.100.7, 10.1.1.1", "198.51.100.7"),  # through two of our proxies
        ("127.0.0.1", "garbage, 10.1.1.1", "10.1.1.1"),
        ("127.0.0.1", "", "127.0.0.1"),
        ("::ffff:127.0.0.1", "203.0.113.5", "203.0.113.5"),
    ],
)
def test_client_address(remote, xff, expected):
    assert client_address(remote, xff, TRUSTED) == expected
