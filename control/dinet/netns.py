"""Network namespaces and veth pairs for topologies, tests and the demo; every one is torn down on exit."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import socket
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from .errors import InterfaceError

log = logging.getLogger(__name__)
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
CLONE_NEWNET = 0x40000000


def run(cmd: Sequence[str], netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    full = (["ip", "netns", "exec", netns] if netns else []) + list(cmd)
    res = subprocess.run(full, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise InterfaceError(f"{' '.join(full)} failed: {res.stderr.strip() or res.stdout.strip()}")
    return res


@contextlib.contextmanager
def entered(netns: str | None) -> Iterator[None]:
    """Runs the block with this thread in `netns` (None: stay where it is), and returns it afterwards.

    Netlink calls (attaching XDP) act in the thread's namespace; bpffs is not affected."""
    if not netns:
        yield
        return
    path = f"/run/netns/{netns}"
    if not os.path.exists(path):
        raise InterfaceError(f"no network namespace {netns!r}")
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise InterfaceError(f"cannot enter network namespace {netns!r}: {os.strerror(ctypes.get_errno())}")
        try:
            yield
        finally:
            if _libc.setns(home, CLONE_NEWNET) != 0:
                raise InterfaceError(f"cannot return from network namespace {netns!r}")
    finally:
        os.close(target)
        os.close(home)


def ifindex(ifname: str, netns: str | None = None) -> int:
    with entered(netns):
        try:
            return socket.if_nametoindex(ifname)
        except OSError:
            where = f" in namespace {netns}" if netns else ""
            raise InterfaceError(f"no interface {ifname!r}{where}") from None


def mac_of(ifname: str, netns: str | None = None) -> str:
    out = run(["cat", f"/sys/class/net/{ifname}/address"], netns).stdout.strip()
    return out


@dataclass
class Topology:
    """A set of namespaces joined by veth pairs, named with a prefix so that parallel runs do not clash.

    Use as a context manager: leaving it deletes every namespace (and so every veth and attached
    program in them), also on error or Ctrl-C."""

    prefix: str
    namespaces: list[str] = field(default_factory=list)

    def ns(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def add_ns(self, name: str) -> str:
        full = self.ns(name)
        run(["ip", "netns", "add", full])
        self.namespaces.append(full)
        run(["ip", "link", "set", "lo", "up"], full)
        run(
            [
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ],
            full,
        )
        return full

    def link(self, a: str, a_if: str, b: str, b_if: str, mtu: int = 1500) -> None:
        """A veth pair a:a_if <-> b:b_if (a and b are short names given to add_ns)."""
        na, nb = self.ns(a), self.ns(b)
        run(
            [
                "ip",
                "link",
                "add",
                "name",
                a_if,
                "mtu",
                str(mtu),
                "netns",
                na,
                "type",
                "veth",
                "peer",
                "name",
                b_if,
                "mtu",
                str(mtu),
                "netns",
                nb,
            ]
        )
        for ns, ifname in ((na, a_if), (nb, b_if)):
            # veth hands partial checksums to its peer; a frame that XDP redirects or tunnels would carry
            # one onto the next hop unfinished, so checksums are computed in software, as on a wire
            run(["ethtool", "-K", ifname, "tx", "off"], ns)
            run(["ip", "link", "set", "dev", ifname, "up"], ns)

    def sh(self, name: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(cmd, self.ns(name), check)

    def addr(self, name: str, ifname: str, cidr: str) -> None:
        self.sh(name, "ip", "addr", "add", cidr, "dev", ifname, *(["nodad"] if ":" in cidr else []))

    def route(self, name: str, dst: str, via: str, *extra: str) -> None:
        self.sh(name, "ip", "route", "replace", dst, "via", via, *extra)

    def forwarding(self, name: str) -> None:
        self.sh(name, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")

    def close(self) -> None:
        for full in reversed(self.namespaces):
            res = run(["ip", "netns", "del", full], check=False)
            if res.returncode != 0:
                log.warning("could not delete namespace %s: %s", full, res.stderr.strip())
        self.namespaces.clear()

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


ETH_P_ALL = 0x0003


def l2_socket(ifname: str, ns: str | None = None) -> socket.socket:
    """A raw AF_PACKET socket bound to ifname in namespace ns: send() injects a frame there, recv() reads
    every frame the interface sees (both directions). Created inside the namespace, so the name resolves
    there (scapy's own sockets resolve names in the namespace it started in)."""
    with entered(ns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            s.bind((ifname, 0))
        except OSError as e:
            s.close()
            raise InterfaceError(f"cannot open a packet socket on {ifname}: {e.strerror}") from None
    return s
