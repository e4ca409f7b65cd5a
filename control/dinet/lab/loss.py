"""Random loss on a link without netem: ebpf/loss.bpf.c at an interface's TC egress (or ingress).

    with LinkLoss("eth1", netns="cloud3", rate=0.05) as loss:
        ...
        loss.counts()   # (passed, dropped)

The kernels this project is tested on have no netem (only htb, tbf, pfifo and clsact); a TC program that
draws bpf_get_prandom_u32() per packet gives Bernoulli loss at line rate and counts what it did. Leaving the
context removes the program and only it (other programs on the same interface stay)."""

from __future__ import annotations

import os

from ..errors import ConfigError
from ..paths import BPFFS_ROOT
from ..targets.bcc_program import BccProgram
from .rig import Rig

PARENT = {"ingress": "ffff:fff2", "egress": "ffff:fff3"}
PRIO = 1  # before the BIER and steering programs (pyroute2 gives those the next free priorities)


class LinkLoss(Rig):
    def __init__(self, ifname: str, netns: str | None = None, rate: float = 0.0, hook: str = "egress"):
        if hook not in PARENT:
            raise ConfigError(f"a loss hook is ingress or egress, not {hook!r}")
        self.ifname, self.netns, self.hook = ifname, netns, hook
        self.prog: BccProgram | None = None
        self._rate = rate

    def build(self) -> None:
        pin = BPFFS_ROOT / f"lab-{os.getpid()}-{self.netns or 'root'}-{self.ifname}" / "loss"
        self.prog = BccProgram("loss.bpf.c", pin)
        self.set_rate(self._rate)
        self._attach()

    def _attach(self) -> None:
        assert self.prog is not None
        self.prog.attach_tc("tc_loss", self.ifname, self.netns, self.hook, PRIO)

    def set_rate(self, rate: float) -> None:
        """The probability (0..1) that a packet is dropped; takes effect on the next packet."""
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"a loss rate is between 0 and 1, not {rate}")
        assert self.prog is not None
        t = self.prog.table("loss_cfg")
        t[t.Key(0)] = t.Leaf(min(int(rate * 2**32), 2**32 - 1))
        self._rate = rate

    def counts(self) -> tuple[int, int]:
        """(packets passed, packets dropped) since the program was attached."""
        assert self.prog is not None
        t = self.prog.table("loss_count")
        return tuple(sum(int(v) for v in t[t.Key(i)]) for i in (0, 1))  # type: ignore[return-value]

    def close(self) -> None:
        if self.prog is None:
            return
        BccProgram.detach_tc_filter(self.ifname, self.netns, self.hook, PRIO)
        self.prog.close()
        self.prog.unpin()
        self.prog = None
