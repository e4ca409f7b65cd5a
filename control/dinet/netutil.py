"""Small socket helpers shared by the lab, the tests and the benchmarks."""

from __future__ import annotations

import socket
from typing import Any

DSCP_CLASSES = {"delay-sensitive": "DINET_DSCP_SENSITIVE", "delay-tolerant": "DINET_DSCP_TOLERANT"}


def dscp_of(cls: str) -> int:
    """The DSCP a traffic class is marked with (dinet_consts.h DINET_DSCP_*): a service class, `kv` or `sync`."""
    from . import consts

    names = DSCP_CLASSES | {"kv": "DINET_DSCP_KV", "sync": "DINET_DSCP_SYNC"}
    if cls not in names:
        from .errors import ConfigError

        raise ConfigError(f"no DSCP for traffic class {cls!r}; classes: {', '.join(sorted(names))}")
    return consts.get(names[cls])


def set_dscp(sock: socket.socket, dscp: int) -> None:
    """Marks what the socket sends with `dscp` (0-63), the ECN bits left to the kernel: IPv4's TOS byte, IPv6's
    traffic class (both, for an IPv6 socket that may carry IPv4-mapped traffic)."""
    if not 0 <= dscp <= 63:
        from .errors import ConfigError

        raise ConfigError(f"a DSCP is 0-63, not {dscp}")
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, dscp << 2)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, dscp << 2)


def marked_socket(dscp: int, factory: Any = None) -> Any:
    """aiohttp's socket factory (None where nothing is to be done): `factory`'s socket (else a plain one), its
    traffic marked `dscp` (dinet.netutil.set_dscp)."""
    if not dscp:
        return factory

    def make(addr_info: Any) -> socket.socket:
        if factory is not None:
            sock: socket.socket = factory(addr_info)
        else:
            family, type_, proto, _, _ = addr_info
            sock = socket.socket(family, type_, proto)
            sock.setblocking(False)
        set_dscp(sock, dscp)
        return sock

    return make


def free_port() -> int:
    """A TCP port nobody listens on right now, on loopback (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
