"""A link's traffic classes (dinet.lab.classes): packets marked where they start land in their HTB class at the
link's egress, by the classifier at TC; a steering tunnel's packets by the DSCP their outer header carries."""

from __future__ import annotations

import json
import socket

from conftest import needs_bcc, needs_root, wait_for

pytestmark = [needs_root, needs_bcc]


def _class_packets(topo, ns: str, dev: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """HTB class -> packets sent (tc prints classes' statistics as text only)."""
    out, handle = {}, ""
    for line in topo.sh(ns, "tc", "-s", "class", "show", "dev", dev).stdout.splitlines():
        words = line.split()
        if words[:2] == ["class", "htb"]:
            handle = words[2]
        elif words[:1] == ["Sent"] and handle:
            out[handle] = int(words[3])
    return out


def test_marked_packets_queue_in_their_class_and_the_plain_queue_comes_back(ns_prefix: str) -> None:
    from dinet.lab.classes import LinkClasses
    from dinet.lab.namespaces import Topology
    from dinet.netutil import dscp_of, set_dscp
    from dinet.targets import netns

    with Topology(ns_prefix) as topo:
        topo.add_ns("a")
        topo.add_ns("b")
        topo.link("a", "a0", "b", "b0")
        topo.addr("a", "a0", "10.77.0.1/24")
        topo.addr("b", "b0", "10.77.0.2/24")
        topo.addr("a", "a0", "fd77::1/64")
        topo.addr("b", "b0", "fd77::2/64")
        topo.sh("a", "ip", "neigh", "replace", "10.77.0.2", "lladdr", "02:00:00:00:00:02", "dev", "a0")
        topo.sh("a", "ip", "-6", "neigh", "replace", "fd77::2", "lladdr", "02:00:00:00:00:02", "dev", "a0")
        sent = {"delay-sensitive": 7, "kv": 5, "sync": 11, "delay-tolerant": 3}
        with LinkClasses("a0", topo.ns("a"), mbit=20) as classes:
            before = _class_packets(topo, "a", "a0")
            with netns.entered(topo.ns("a")):
                for family, dst in ((socket.AF_INET, "10.77.0.2"), (socket.AF_INET6, "fd77::2")):
                    for cls, n in sent.items():
                        with socket.socket(family, socket.SOCK_DGRAM) as s:
                            set_dscp(s, dscp_of(cls))
                            for _ in range(n):
                                s.sendto(b"x" * 100, (dst, 9))
                    with socket.socket(family, socket.SOCK_DGRAM) as s:  # unmarked: the default class
                        for _ in range(2):
                            s.sendto(b"y" * 100, (dst, 9))
            total = 2 * (sum(sent.values()) + 2)

            def dequeued() -> dict[str, int]:  # a class below its rate waits for tokens a moment: its backlog
                after = _class_packets(topo, "a", "a0")
                return {h: after[h] - before.get(h, 0) for h in after}

            assert wait_for(lambda: dequeued().get("1:1", 0) >= total), dequeued()
            got = dequeued()
            counts = classes.counts()
            # both families, each class's packets in its HTB class (the neighbours are static: no ARP or ND);
            # unmarked ones with delay-tolerant inference
            assert got["1:10"] == 2 * sent["delay-sensitive"], got
            assert got["1:20"] == 2 * sent["kv"], got
            assert got["1:40"] == 2 * sent["sync"], got
            # (the kernel's own IPv6 router solicitations and MLD reports may come meanwhile: unmarked, there too)
            assert got["1:30"] >= 2 * (sent["delay-tolerant"] + 2), got
            assert counts["delay-sensitive"] == 14 and counts["sync"] == 22, counts
            classes.off()
            root = topo.sh("a", "tc", "-j", "qdisc", "show", "dev", "a0", "root").stdout
            assert json.loads(root)[0]["kind"] == "tbf"  # one FIFO again; the classifier stays, ignored
            classes.set_rate(10)
            assert json.loads(topo.sh("a", "tc", "-j", "qdisc", "show", "dev", "a0", "root").stdout)[0]["kind"] == "htb"
        filters = topo.sh("a", "tc", "filter", "show", "dev", "a0", "egress").stdout
        assert "tc_classify" not in filters  # the program is gone, the plain queue back
        assert json.loads(topo.sh("a", "tc", "-j", "qdisc", "show", "dev", "a0", "root").stdout)[0]["kind"] == "tbf"
