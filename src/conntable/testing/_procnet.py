"""What a socket is, read from Linux's ``/proc/self/net`` tables by inode.

``readlink("/proc/self/fd/N")`` says only ``socket:[inode]``. The kernel's
socket tables (``tcp``, ``tcp6``, ``udp``, ``udp6``, ``unix``) list every
socket of the network namespace with its inode, so matching inodes names a
descriptor's family, local and peer addresses and TCP state without touching
the socket itself (no ``socket.fromfd``, which would duplicate the descriptor
and could run into the very limit being investigated).

The tables list the whole namespace's sockets: read them only when there is a
socket to describe.
"""

from __future__ import annotations

import ipaddress
import sys
from typing import Dict, Iterator, List, Tuple

__all__ = ("socket_descriptions",)

# include/net/tcp_states.h
_TCP_STATES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
}
_UNIX_TYPES = {1: "stream", 2: "dgram", 5: "seqpacket"}
_INET_TABLES = ("tcp", "tcp6", "udp", "udp6")


def decode_address(text: str) -> str:
    """``0100007F:1F90`` -> ``127.0.0.1:8080``; IPv6 as ``[::1]:8080``.

    The kernel prints the address as 32-bit words in host byte order, each
    as 8 hex digits; the port is plain hex.
    """
    host_hex, port_hex = text.split(":")
    packed = bytes.fromhex(host_hex)
    if sys.byteorder == "little":  # undo the per-word byte order: reverse every 4-byte group
        packed = b"".join(packed[i:i + 4][::-1] for i in range(0, len(packed), 4))
    port = int(port_hex, 16)
    if len(packed) == 4:
        return f"{ipaddress.IPv4Address(packed)}:{port}"
    address = ipaddress.IPv6Address(packed)
    mapped = address.ipv4_mapped
    return f"{mapped}:{port}" if mapped is not None else f"[{address}]:{port}"


def _read_lines(name: str) -> List[str]:
    try:
        with open(f"/proc/self/net/{name}", encoding="ascii", errors="replace") as table:
            return table.readlines()[1:]  # the first line is the header
    except OSError:  # not Linux, or no such protocol here
        return []


def inet_entries(name: str, lines: List[str]) -> Iterator[Tuple[int, str]]:
    """``(inode, description)`` for each line of a tcp/udp table."""
    kind = name.rstrip("6")
    for line in lines:
        fields = line.split()
        if len(fields) < 10:
            continue
        local, remote, state, inode = fields[1], fields[2], int(fields[3], 16), int(fields[9])
        text = f"{kind} {decode_address(local)}"
        if kind == "tcp":
            if state != 10:  # a listening socket has no peer
                text += f" -> {decode_address(remote)}"
            text += f" ({_TCP_STATES.get(state, state)})"
        elif int(remote.replace(":", ""), 16):  # a connected UDP socket
            text += f" -> {decode_address(remote)}"
        yield inode, text


def unix_entries(lines: List[str]) -> Iterator[Tuple[int, str]]:
    """``(inode, description)`` for each line of the unix table."""
    for line in lines:
        fields = line.split()
        if len(fields) < 7:
            continue
        kind = _UNIX_TYPES.get(int(fields[4], 16), "socket")
        path = fields[7] if len(fields) > 7 else "(unnamed)"
        yield int(fields[6]), f"unix {kind} {path}"


def socket_descriptions() -> Dict[int, str]:
    """Socket inode -> ``"tcp 127.0.0.1:41000 -> 127.0.0.1:8888 (ESTABLISHED)"`` and the like."""
    found: Dict[int, str] = {}
    for name in _INET_TABLES:
        found.update(inet_entries(name, _read_lines(name)))
    found.update(unix_entries(_read_lines("unix")))
    return found
