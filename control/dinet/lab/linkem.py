"""Link emulation: a node on the wire of each emulated link, and the measurement of what a path achieves.

A LinkEmulator is a Mininet host with two interfaces (toward A and toward B) that forwards every frame
between them with the link's delay, loss and rate, each way. Two engines:

- netem, where the kernel has it (`--backend netem`, or `auto` when a netem qdisc can be added): a bridge in
  the node and a netem qdisc (delay, loss, rate) on each of its two egress interfaces;
- the fallback for kernels without netem (this project's test kernel has only htb, tbf, pfifo and clsact):
  the delay line (dinet.lab.delayline, AF_PACKET) forwards and delays, a TBF on each egress interface
  limits the rate, and ebpf/loss.bpf.c (dinet.lab.loss) at TC egress drops at random.

On the wire rather than at the ends: an XDP-redirected frame (the steering node's tunnels) skips the sending
interface's qdisc, TC egress and netfilter, and a BMv2 switch reads its ports before TC, so emulation at the
ends would miss them. `bench/linkem.py` measures the fallback: configured against achieved RTT, and the TCP
rate it carries."""

from __future__ import annotations

import contextlib
import logging
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DinetError
from .classes import LinkClasses, tbf_args
from .loss import LinkLoss
from .scenario import LinkSpec

log = logging.getLogger(__name__)


class LinkEmulator:
    def __init__(self, name: str, spec: LinkSpec, a: str, b: str):
        self.name, self.spec, self.a, self.b = name, spec, a, b
        self.host: Any = None  # the Mininet host
        self.ends: tuple[Any, Any] = (None, None)  # the neighbours' interfaces (on A and on B)
        self.wire: tuple[str, str] = ("", "")  # this node's interfaces: toward A, toward B
        self.engine = ""
        self.line: subprocess.Popen[str] | None = None
        self.losses: list[LinkLoss] = []
        self.netns = ""
        self.cuts: list[LinkLoss] = []  # set_cut's droppers (made at the first cut)
        self.classes: dict[str, LinkClasses] = {}  # wire interface -> its classes (made when first asked for)
        self.rates: dict[str, float] = {}  # wire interface -> its rate now (Mbit/s)

    @property
    def pid(self) -> int | None:
        return self.line.pid if self.line else None

    def start(self, netns: str, backend: str, logs: Path) -> None:
        """Configures the node (its namespace named `netns`): netem if asked or available, else the fallback."""
        self.netns = netns
        for end in self.ends:  # whole frames on the wire: no segmentation offload, checksums filled in
            end.node.cmd(f"ethtool -K {end.name} tx off tso off gso off gro off >/dev/null 2>&1")
        for dev in self.wire:
            self.host.cmd(f"ethtool -K {dev} gro off >/dev/null 2>&1")
        if backend in ("auto", "netem") and self._netem():
            self.engine = "netem"
            return
        if backend == "netem":
            raise DinetError(f"{self.name}: this kernel has no netem qdisc (use --backend auto or delayline)")
        self.engine = "delayline"
        s = self.spec
        if s.bw_mbit is not None:
            for dev in self.wire:
                out = self.host.cmd(f"tc qdisc add dev {dev} root {tbf_args(s.bw_mbit)} 2>&1")
                if out.strip():
                    raise DinetError(f"{self.name}: cannot limit {dev} to {s.bw_mbit} Mbit/s: {out.strip()}")
                self.rates[dev] = s.bw_mbit
        if s.loss > 0:
            for dev in self.wire:
                self.losses.append(LinkLoss(dev, netns, s.loss).__enter__())
        logf = open(logs / f"{self.name}.log", "w")  # noqa: SIM115 - lives as long as the process
        self.line = subprocess.Popen(  # by the namespace's name: see Lab.popen
            ["ip", "netns", "exec", netns, sys.executable, "-m", "dinet.lab.delayline", *self.wire]
            + ["--delay-ms", str(s.delay_ms)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=logf,
            text=True,
        )
        logf.close()
        ready = self.line.stdout.readline() if self.line.stdout else ""
        if ready.strip() != "ready":
            raise DinetError(f"{self.name}: the delay line did not start (see {logs}/{self.name}.log)")

    def _netem(self) -> bool:
        s, (da, db) = self.spec, self.wire
        opts = f"delay {s.delay_ms}ms" + (f" loss {s.loss * 100}%" if s.loss else "")
        opts += f" rate {s.bw_mbit}mbit" if s.bw_mbit else ""
        if self.host.cmd(f"tc qdisc add dev {da} root netem {opts} 2>&1").strip():
            return False  # no netem here
        out = self.host.cmd(f"tc qdisc add dev {db} root netem {opts} 2>&1")
        out += self.host.cmd(
            f"ip link add br0 type bridge && ip link set {da} master br0 && ip link set {db} master br0 "
            "&& ip link set br0 up 2>&1"
        )
        if out.strip():
            raise DinetError(f"{self.name}: netem: {out.strip()}")
        return True

    def set_delay(self, delay_ms: float) -> None:
        """The link's one-way delay changes at run time (both directions; frames in flight keep theirs)."""
        if delay_ms < 0:
            raise DinetError(f"{self.name}: a delay is not negative: {delay_ms}")
        if self.engine == "netem":
            s = self.spec
            opts = f"delay {delay_ms}ms" + (f" loss {s.loss * 100}%" if s.loss else "")
            opts += f" rate {s.bw_mbit}mbit" if s.bw_mbit else ""
            out = "".join(self.host.cmd(f"tc qdisc change dev {dev} root netem {opts} 2>&1") for dev in self.wire)
            if out.strip():
                raise DinetError(f"{self.name}: netem: {out.strip()}")
            return
        if self.line is None or self.line.stdin is None or self.line.poll() is not None:
            raise DinetError(f"{self.name}: the delay line is not running")
        self.line.stdin.write(f"delay {delay_ms} {delay_ms}\n")
        self.line.stdin.flush()

    def _wire(self, toward: str) -> str:
        if toward not in (self.a, self.b):
            raise DinetError(f"{self.name} joins {self.a} and {self.b}, not {toward}")
        return self.wire[1] if toward == self.b else self.wire[0]

    def set_rate(self, mbit: float, toward: str) -> None:
        """The link's rate toward one of its ends changes at run time (the queue is tbf's: 100 ms of it)."""
        if mbit <= 0:
            raise DinetError(f"{self.name}: a rate is positive, not {mbit}")
        dev = self._wire(toward)
        if dev in self.classes and self.classes[dev].on:  # the classes keep their shares of the new rate
            self.classes[dev].set_rate(mbit)
            self.rates[dev] = mbit
            return
        if self.engine == "netem":
            s = self.spec
            opts = f"delay {s.delay_ms}ms rate {mbit}mbit" + (f" loss {s.loss * 100}%" if s.loss else "")
            out = self.host.cmd(f"tc qdisc change dev {dev} root netem {opts} 2>&1")
        else:
            out = self.host.cmd(f"tc qdisc replace dev {dev} root {tbf_args(mbit)} 2>&1")
        if out.strip():
            raise DinetError(f"{self.name}: cannot set {dev} to {mbit} Mbit/s: {out.strip()}")
        self.rates[dev] = mbit

    def set_classes(self, on: bool) -> None:
        """Class-based queuing on both directions (dinet.lab.classes: HTB by DSCP), or back to one FIFO (the
        TBF). Needs the delay-line engine and a rate (a netem qdisc has no classes under it here)."""
        if self.engine != "delayline" or not self.rates:
            raise DinetError(f"{self.name}: classes need the delay-line engine and a link rate")
        for dev, mbit in self.rates.items():
            if dev not in self.classes:
                if not on:
                    continue
                self.classes[dev] = LinkClasses(dev, self.netns, mbit).__enter__()
            self.classes[dev].set_rate(mbit, on)

    def class_counts(self) -> dict[str, dict[str, int]]:
        """Wire interface -> class -> packets the classifier put there."""
        return {dev: c.counts() for dev, c in self.classes.items()}

    def tx_bytes(self, toward: str) -> int:
        """Bytes sent toward one end (the interface counter of the wire to it)."""
        out = self.host.cmd(f"cat /sys/class/net/{self._wire(toward)}/statistics/tx_bytes").strip()
        try:
            return int(out)
        except ValueError:
            raise DinetError(f"{self.name}: no byte counter: {out}") from None

    def set_cut(self, cut: bool) -> None:
        """The link fails (every frame dropped, both ways) or comes back; the interfaces and every route stay
        as they are, as when a fibre is cut further along (a TC program that drops all, made at the first cut)."""
        if not self.cuts:
            if not cut:
                return
            for dev in self.wire:
                self.cuts.append(LinkLoss(dev, self.netns, 0.0).__enter__())
        for c in self.cuts:
            c.set_rate(1.0 if cut else 0.0)

    def stop(self) -> None:
        if self.line is not None:
            stop_processes([self.line])
            self.line = None
        for loss in [*self.losses, *self.cuts, *self.classes.values()]:
            with contextlib.suppress(Exception):  # its interface may be gone already
                loss.close()
        self.losses.clear()
        self.cuts.clear()
        self.classes.clear()


def stop_processes(procs: list[subprocess.Popen[Any]]) -> None:
    """SIGTERM, 5 s to end, then SIGKILL; their pipes closed."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        for f in (p.stdout, p.stderr):
            if f:
                f.close()


def ping(netns: str, address: str, count: int) -> subprocess.Popen[str]:
    """A ping started in a network namespace (`count` echoes 20 ms apart)."""
    return subprocess.Popen(
        ["ip", "netns", "exec", netns, "ping", "-n", "-q", "-i", "0.02", "-W", "2", "-c", str(count), address],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@dataclass(frozen=True)
class PathReport:
    """A path as configured and as measured through it (ping from the ingress router to the site router)."""

    ingress: str
    site: str
    label: str
    security: int
    rtt_configured_ms: float
    loss_configured: float  # round trip: 1 - (1 - loss)^2
    rtt_ms: float | None  # the mean RTT measured (None: no answer)
    loss: float
    sent: int

    @classmethod
    def from_ping(cls, ingress: str, site: str, spec: Any, p: subprocess.Popen[str]) -> PathReport:
        out, _ = p.communicate(timeout=60)
        sent = recv = 0
        m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", out)
        if m:
            sent, recv = int(m.group(1)), int(m.group(2))
        rtt = re.search(r"= [\d.]+/([\d.]+)/", out)
        return cls(
            ingress,
            site,
            spec.label,
            spec.security,
            2 * spec.delay_ms,
            1 - (1 - spec.loss) ** 2,
            float(rtt.group(1)) if rtt else None,
            1 - recv / sent if sent else 1.0,
            sent,
        )

    def row(self) -> str:
        got = f"{self.rtt_ms:8.2f}" if self.rtt_ms is not None else "    none"
        return (
            f"{self.ingress:<8}{self.site:<10}{self.label[:18]:<19}{self.security:>3}"
            f"{self.rtt_configured_ms:>10.2f}{got}{self.loss_configured:>9.1%}{self.loss:>8.1%}"
        )

    @staticmethod
    def header() -> str:
        return f"{'ingress':<8}{'site':<10}{'path':<19}{'sec':>3}{'rtt cfg':>10}{'rtt got':>8}{'loss cfg':>9}{'got':>8}"
