"""Where a run's CPU went (dinet.lab.cpu): a process's own CPU seconds as the kernel counts them, and a meter
over a group of processes."""

from __future__ import annotations

import subprocess
import sys

from dinet.lab.cpu import TICK, Meter, machine, process

# a child that burns `n` CPU seconds of its own, says so, then waits (blocked, no CPU) until its stdin closes
BURN = (
    "import sys, time\n"
    "n = float(sys.argv[1]); t = time.process_time()\n"
    "while time.process_time() - t < n: pass\n"
    "print('done', flush=True); sys.stdin.read()\n"
)


def _burner(seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", BURN, str(seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def test_a_process_cpu_and_a_group_meter_count_what_the_process_burnt() -> None:
    p = _burner(0.4)
    try:
        m = Meter({"burner": [p.pid]})
        m.start()
        before = process(p.pid)
        busy0 = machine()[0]
        assert p.stdout is not None and p.stdout.readline() == "done\n"
        used = process(p.pid) - before
        assert process(p.pid) >= 0.4 - 2 / TICK  # it burnt its 0.4 s (the kernel counts in ticks)
        assert machine()[0] - busy0 >= used - 2 / TICK  # the machine was busy at least as long
        got = m.stop()
        assert got["burner_cores"] > 0 and got["machine_cores"] >= got["burner_cores"] - 0.05
    finally:
        p.kill()
        p.wait()
    assert process(p.pid) == 0.0  # gone (reaped): nothing to read, no error
    assert process(None) == 0.0
