"""Is the asker on this host, or on one of the networks the admin calls local?

Hand-written over ``_socket.inet_pton`` rather than the ``ipaddress`` module, because this is
on the per-connection path: ``ipaddress`` imports ``re``, ``enum`` and ``functools``, 19 ms
cumulative on bookworm's interpreter (median of 11 runs of ``/usr/bin/python3 -I -X
importtime -c 'import ipaddress'``), against a per-connection budget of about 10 ms, while
``_socket`` is built in and the handler has it already. A network is parsed when the config
is loaded; a match is two integer shifts. The loopback test alone is fingerd/protocol.py's
``is_loopback``: this module is imported only when ``local_networks`` are configured.
"""

import _socket

from fingerd.protocol import is_loopback, pack_address

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fingerd.config import Options


class Network:
    """An IPv4 or IPv6 network, ``192.0.2.0/24`` or ``2001:db8::/64``."""

    __slots__ = ("bits", "prefix", "text", "value")

    def __init__(self, text: str) -> None:
        """Parse ``text``; ValueError (with the reason) for anything but a network address
        with an optional prefix length and no host bits set."""
        address, slash, length = text.partition("/")
        packed = pack_address(address)
        if packed is None:
            raise ValueError(f"{text!r} is not an IPv4 or IPv6 network")
        self.bits = len(packed) * 8
        # An IPv4-mapped network (::ffff:192.0.2.0/120) is the IPv4 one (192.0.2.0/24),
        # as addresses are matched in their IPv4 form.
        mapped = 96 if ":" in address and self.bits == 32 else 0
        if not slash:
            self.prefix = self.bits
        elif (length.isascii() and length.isdigit()
              and mapped <= int(length) <= self.bits + mapped):
            self.prefix = int(length) - mapped
        else:
            raise ValueError(f"{text!r}: the prefix length must be {mapped} to "
                             f"{self.bits + mapped}")
        self.value = int.from_bytes(packed, "big")
        if self.value & ((1 << (self.bits - self.prefix)) - 1):
            fixed = self.value >> (self.bits - self.prefix) << (self.bits - self.prefix)
            family = _socket.AF_INET if self.bits == 32 else _socket.AF_INET6
            correct = _socket.inet_ntop(family, fixed.to_bytes(self.bits // 8, "big"))
            raise ValueError(f"{text!r} has host bits set; did you mean "
                             f"'{correct}/{self.prefix}'?" if not mapped else
                             f"{text!r} has host bits set")
        self.text = text

    def __contains__(self, packed: object) -> bool:
        if not isinstance(packed, bytes) or len(packed) * 8 != self.bits:
            return False
        shift = self.bits - self.prefix
        return int.from_bytes(packed, "big") >> shift == self.value >> shift

    def __repr__(self) -> str:
        return f"Network({self.text!r})"


def is_local(address: str, networks: "tuple[Network, ...]" = ()) -> bool:
    """True if ``address`` is loopback (127.0.0.0/8, ::1, ::ffff:127.x.y.z) or in one of
    ``networks``. An empty or unparsable address (an asker nobody can vouch for) is not."""
    if is_loopback(address):
        return True
    packed = pack_address(address) if address and networks else None
    return packed is not None and any(packed in network for network in networks)


def from_options(options: "Options", key: str) -> "tuple[Network, ...]":
    """A config list of networks, ``"192.0.2.0/24"`` or ``"2001:db8::/64"``; a bad one is an
    error naming the file, the line and the key."""
    parsed = []
    for text in options.string_list(key, []):
        try:
            parsed.append(Network(text))
        except ValueError as e:
            raise options.error(key, str(e)) from None
    return tuple(parsed)
