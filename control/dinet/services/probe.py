"""Measured network metrics: round-trip probes (ping) toward a site, turned into the delay and loss the
decisions use. Where a site has a probe address, measurement replaces the configured figures."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from ..errors import ConfigError
from ..model import SitePath, parse_address

_LOSS = re.compile(r"(\d+(?:\.\d+)?)% packet loss")
_RTT = re.compile(r"= [\d.]+/([\d.]+)/")


@dataclass(frozen=True)
class Probe:
    """ping `address` (from namespace `netns`, None: this one), `count` echoes `interval` s apart."""

    address: str
    netns: str | None = None
    count: int = 3
    interval: float = 0.2
    timeout_s: int = 1

    def __post_init__(self) -> None:
        # ping's argument: an address, never a host name or an option (`-f`) from a file
        object.__setattr__(self, "address", str(parse_address(self.address)))
        if self.count < 1 or self.interval <= 0 or self.timeout_s < 1:
            raise ConfigError(f"probe {self.address}: count >= 1, interval > 0 s, timeout >= 1 s")

    def measure(self) -> SitePath:
        """One-way delay (half the mean RTT, ms) and loss (0..1). A site that answers nothing: loss 1."""
        cmd = [
            "ping",
            "-n",
            "-q",
            "-c",
            str(self.count),
            "-i",
            str(self.interval),
            "-W",
            str(self.timeout_s),
            self.address,
        ]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True).stdout
        loss_m, rtt_m = _LOSS.search(out), _RTT.search(out)
        loss = float(loss_m.group(1)) / 100 if loss_m else 1.0
        if not rtt_m:
            return SitePath(delay_ms=0.0, loss=1.0)
        return SitePath(delay_ms=float(rtt_m.group(1)) / 2, loss=loss)
