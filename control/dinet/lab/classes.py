"""A link's traffic classes (draft-song-dmsc-problem-statement s5.2, performance isolation): class-based queuing
at an interface's egress, as a provider's router would do it, on a kernel with only htb, tbf, pfifo and clsact.

HTB at the root, one leaf per class with a guaranteed share of the link's rate and the whole rate as ceiling
(what a class leaves unused, the others borrow, in the order of their priority), a pfifo of about 100 ms of
the rate under each (as the link's TBF holds); ebpf/classify.bpf.c at the TC egress hook reads each packet's
DSCP (dinet_consts.h DINET_DSCP_*: marked where the traffic starts, copied to the steering tunnels' outer
header) and names its class in skb->priority.

    with LinkClasses("x1-eth1", netns="lab-x1", mbit=50) as c:
        ...
        c.counts()   # class name -> packets classified
        c.off()      # back to the plain TBF (the program stays; TBF ignores the class)

Leaving the context removes the program and puts the plain TBF back."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from .. import consts
from ..errors import ConfigError, DinetError
from ..paths import BPFFS_ROOT
from ..targets.bcc_program import BccProgram
from .rig import Rig

PRIO = 2  # after a loss program (prio 1): both run, in either order the outcome is the same


@dataclass(frozen=True)
class LinkClass:
    name: str
    minor: int  # HTB class 1:minor (tc writes minors in hex: 0x10 is "1:10")
    dscps: tuple[int, ...]
    share: float  # of the link's rate, guaranteed
    prio: int  # HTB priority: lower is served (and borrows) first


def default_classes() -> tuple[LinkClass, ...]:
    """Inference first, then a KV hand-over, then delay-tolerant inference and anything unmarked, a model sync
    last (it borrows what the others leave: the whole link when they are idle)."""
    c = consts.load()
    return (
        LinkClass("delay-sensitive", 0x10, (c["DINET_DSCP_SENSITIVE"],), 0.4, 0),
        LinkClass("kv", 0x20, (c["DINET_DSCP_KV"],), 0.2, 1),
        LinkClass("delay-tolerant", 0x30, (c["DINET_DSCP_TOLERANT"], 0), 0.3, 2),
        LinkClass("sync", 0x40, (c["DINET_DSCP_SYNC"],), 0.1, 3),
    )


DEFAULT_MINOR = 0x30  # unmarked traffic (and ARP, probes) queues with delay-tolerant inference


def tbf_args(mbit: float) -> str:
    """The plain link's queue: a TBF of the rate, 100 ms of latency, a burst of 4 ms (at least 16 kB)."""
    return f"tbf rate {mbit}mbit burst {max(16_000, int(mbit * 1e6 / 8 / 250))} latency 100ms"


class LinkClasses(Rig):
    def __init__(self, ifname: str, netns: str | None, mbit: float, classes: tuple[LinkClass, ...] | None = None):
        if mbit <= 0:
            raise ConfigError(f"{ifname}: classes need the link's rate, not {mbit} Mbit/s")
        self.ifname, self.netns, self.mbit = ifname, netns, mbit
        self.classes = classes or default_classes()
        if abs(sum(k.share for k in self.classes) - 1.0) > 1e-6:
            raise ConfigError(f"{ifname}: the classes' shares add up to 1, not {sum(k.share for k in self.classes)}")
        self.prog: BccProgram | None = None
        self.on = False

    def build(self) -> None:
        pin = BPFFS_ROOT / f"lab-{os.getpid()}-{self.netns or 'root'}-{self.ifname}" / "classify"
        self.prog = BccProgram("classify.bpf.c", pin)
        t = self.prog.table("class_of")
        for k in self.classes:
            for d in k.dscps:
                t[t.Key(d)] = t.Leaf(k.minor)
        self.prog.attach_tc("tc_classify", self.ifname, self.netns, "egress", PRIO)
        self.set_rate(self.mbit)

    def _tc(self, *commands: str) -> None:
        for cmd in commands:
            argv = ["tc", *cmd.split()]
            if self.netns:
                argv = ["ip", "netns", "exec", self.netns, *argv]
            out = subprocess.run(argv, capture_output=True, text=True, check=False)
            if out.returncode:
                raise DinetError(f"{self.ifname}: tc {cmd}: {out.stderr.strip()}")

    def set_rate(self, mbit: float, on: bool = True) -> None:
        """The link's rate, with the classes (on) or the plain TBF (off) as its root qdisc."""
        self.mbit = mbit
        dev = self.ifname
        if not on:
            if self.on:  # another kind at the root: tc cannot change one into the other, only replace it whole
                self._tc(f"qdisc del dev {dev} root")
            self._tc(f"qdisc replace dev {dev} root {tbf_args(mbit)}")
            self.on = False
            return
        limit = max(64, int(mbit * 1e6 / 8 * 0.1 / 1500))  # about 100 ms of the rate, in full frames
        cmds = []
        if not self.on:  # HTB at the root once; a new rate then changes its classes only (HTB cannot be changed)
            cmds += [f"qdisc del dev {dev} root"] * self._has_root()
            cmds += [f"qdisc add dev {dev} root handle 1: htb default {DEFAULT_MINOR:x}"]
        cmds += [f"class replace dev {dev} parent 1: classid 1:1 htb rate {mbit}mbit ceil {mbit}mbit"]
        for k in self.classes:
            cmds.append(
                f"class replace dev {dev} parent 1:1 classid 1:{k.minor:x} htb rate {mbit * k.share:.3f}mbit "
                f"ceil {mbit}mbit prio {k.prio}"
            )
            cmds.append(f"qdisc replace dev {dev} parent 1:{k.minor:x} handle {k.minor:x}: pfifo limit {limit}")
        self._tc(*cmds)
        self.on = True

    def _has_root(self) -> bool:
        """Whether the interface has a root qdisc of its own (not the default noqueue/pfifo_fast stand-in)."""
        argv = ["tc", "qdisc", "show", "dev", self.ifname, "root"]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        return any(w in out for w in ("tbf", "htb", "netem", "pfifo "))

    def off(self) -> None:
        self.set_rate(self.mbit, on=False)

    def counts(self) -> dict[str, int]:
        """Class name -> packets classified (since the program was attached)."""
        assert self.prog is not None
        t = self.prog.table("class_count")
        names = {k.minor >> 4 & 15: k.name for k in self.classes}
        return {names.get(i, "default"): sum(int(v) for v in t[t.Key(i)]) for i in range(16) if i in names}

    def close(self) -> None:
        if self.prog is None:
            return
        BccProgram.detach_tc_filter(self.ifname, self.netns, "egress", PRIO)
        if self.on:
            try:
                self.off()
            except DinetError:  # the interface is gone: so is its queue
                pass
        self.prog.close()
        self.prog.unpin()
        self.prog = None
