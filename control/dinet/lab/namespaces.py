"""A test and demo rig: network namespaces joined by veth pairs (not part of the dinet package)."""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass, field

from ..targets.netns import run

log = logging.getLogger(__name__)


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
