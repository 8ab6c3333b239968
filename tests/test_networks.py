"""fingerd/networks.py: who counts as a local asker. Checked against the standard library's
``ipaddress``, which fingerd does not import on the per-connection path."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fingerd.networks import Network, is_local


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.255.255.254", "127.1.2.3", "::1", "::ffff:127.0.0.1",
    "::ffff:127.9.9.9", "0:0:0:0:0:0:0:1"])
def test_loopback_is_local(address: str) -> None:
    """127.0.0.0/8, ::1 and IPv4-mapped 127.x are loopback: local with no networks set."""
    assert is_local(address)


@pytest.mark.parametrize("address", [
    "", "10.79.0.1", "128.0.0.1", "126.255.255.255", "::2", "::", "fe80::1%lo",
    "::ffff:10.0.0.1", "2001:db8::1", "localhost", "127.0.0.1 ", "127.0.0.1\0", "127.1",
    "::127.0.0.1", "1.2.3.4/32", "garbage"])
def test_others_are_remote(address: str) -> None:
    """Anything else, an address nobody vouches for (""), and what is not an address at all,
    is remote."""
    assert not is_local(address)


def test_configured_networks() -> None:
    """local_networks: an address inside one of them is local, IPv4 (also as ::ffff:) and IPv6,
    with or without a zone."""
    nets = (Network("192.0.2.0/24"), Network("2001:db8::/64"), Network("198.51.100.7"))
    for address in ("192.0.2.1", "192.0.2.255", "::ffff:192.0.2.9", "2001:db8::1",
                    "2001:db8::ffff:1:2", "198.51.100.7", "2001:db8::5%eth0"):
        assert is_local(address, nets), address
    for address in ("192.0.3.1", "198.51.100.8", "2001:db8:0:1::1", "10.0.0.1"):
        assert not is_local(address, nets), address
    assert is_local("10.1.2.3", (Network("0.0.0.0/0"),))
    assert is_local("192.0.2.9", (Network("::ffff:192.0.2.0/120"),))  # IPv4-mapped
    assert not is_local("192.0.3.9", (Network("::ffff:192.0.2.0/120"),))
    assert not is_local("::1:2", (Network("0.0.0.0/0"),))


@pytest.mark.parametrize("text,reason", [
    ("192.0.2.1/24", "has host bits set; did you mean '192.0.2.0/24'?"),
    ("2001:db8::1/64", "has host bits set; did you mean '2001:db8::/64'?"),
    ("192.0.2.0/33", "the prefix length must be 0 to 32"),
    ("::ffff:192.0.2.0/64", "the prefix length must be 96 to 128"),
    ("::ffff:192.0.2.1/120", "has host bits set"),
    ("2001:db8::/129", "the prefix length must be 0 to 128"),
    ("192.0.2.0/-1", "the prefix length must be 0 to 32"),
    ("192.0.2.0/", "the prefix length must be 0 to 32"),
    ("192.0.2.0/\u0662\u0664", "the prefix length must be 0 to 32"),
    ("lan", "is not an IPv4 or IPv6 network"), ("", "is not an IPv4 or IPv6 network"),
    ("192.168.1", "is not an IPv4 or IPv6 network")])
def test_bad_networks(text: str, reason: str) -> None:
    """A network that is not one is an error saying why."""
    with pytest.raises(ValueError) as caught:
        Network(text)
    assert reason in str(caught.value)


@given(st.ip_addresses(), st.ip_addresses(), st.integers(0, 128))
def test_agrees_with_ipaddress(address: object, base: object, length: int) -> None:
    """For any address and network, the hand-written match says what ipaddress says (with
    IPv4-mapped addresses and networks taken as IPv4)."""
    assert isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address)
    assert isinstance(base, ipaddress.IPv4Address | ipaddress.IPv6Address)
    length = min(length, base.max_prefixlen)
    network = ipaddress.ip_network(f"{base}/{length}", strict=False)
    ours = Network(str(network))
    # fingerd matches IPv4-mapped addresses and networks (::ffff:0:0/96) as IPv4 ones.
    candidate = address
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidate = address.ipv4_mapped
    mapped = network.network_address
    if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped is not None and (
            network.prefixlen >= 96):
        network = ipaddress.ip_network(f"{mapped.ipv4_mapped}/{network.prefixlen - 96}")
    expected = candidate in network or candidate.is_loopback
    assert is_local(str(address), (ours,)) == expected
