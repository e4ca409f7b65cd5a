"""Where a lab's CPU goes during a run: the machine's busy time (/proc/stat) and named processes' own
(/proc/PID/stat: user + system), so that an experiment can say whether its processes competed for the cores
(a lab shares them with everything it emulates: model servers, delay lines, traffic)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

TICK = os.sysconf("SC_CLK_TCK")


def machine() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores together."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    total = sum(vals[:8])  # guest time is already in user
    return (total - idle) / TICK, total / TICK


def process(pid: int | None) -> float:
    """A process's CPU seconds so far (user + system), 0 where it is gone."""
    if not pid:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0
    return (int(rest[11]) + int(rest[12])) / TICK  # fields 14 and 15: utime, stime


@dataclass
class Meter:
    """CPU used between start() and stop(), in cores (CPU seconds per second): the machine's, and per group
    of processes (pids that live through the run: a lab's delay lines, its model servers)."""

    groups: dict[str, list[int]] = field(default_factory=dict)
    _t: float = 0.0
    _busy: float = 0.0
    _p: dict[int, float] = field(default_factory=dict)

    def start(self) -> None:
        self._t, self._busy = time.monotonic(), machine()[0]
        self._p = {pid: process(pid) for pids in self.groups.values() for pid in pids}

    def stop(self) -> dict[str, float]:
        secs = max(time.monotonic() - self._t, 1e-9)
        out = {"machine_cores": round((machine()[0] - self._busy) / secs, 3)}
        for name, pids in self.groups.items():
            used = sum(max(0.0, process(p) - self._p[p]) for p in pids if p in self._p)
            out[f"{name}_cores"] = round(used / secs, 3)
        return out
