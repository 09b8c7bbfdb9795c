"""Addresses and listening sockets: what counts as loopback, and what this host listens on (``/proc/net/tcp*``)."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1, as a Java socket on IPv6 lists it
    return (mapped or address).is_loopback


def _address(hex_address: str) -> str:
    """An address of ``/proc/net/tcp*`` (little-endian 32-bit words in hex) as text."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def listeners(port: int) -> set[str] | None:
    """The local addresses listening on TCP ``port``, from ``/proc/net/tcp*`` (None without them)."""
    found: set[str] | None = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        found = found or set()
        for row in rows:
            fields = row.split()
            address, _, hex_port = fields[1].rpartition(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(_address(address))
    return found


def listening_addresses(port: int) -> set[str]:
    """The local addresses a socket of this host listens on at TCP ``port`` (empty without ``/proc``)."""
    return listeners(port) or set()


def listening(port: int) -> bool | None:
    """Whether a socket of this host listens on TCP ``port`` (from ``/proc/net/tcp*``; None without them).

    Looked up rather than probed: a connection that closes before its handshake makes the
    Thrift server log an error with a stack trace.
    """
    found = listeners(port)
    return None if found is None else bool(found)
