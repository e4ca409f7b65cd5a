"""What every benchmark shares: the host it ran on, a root check, and writing its JSON beside a line saying
where. The benchmarks run as modules from the source tree (`python -m bench.NAME`), so `bench`, `tests` (the
packet vectors and rigs) and `topo` import as packages, with no edit of sys.path."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def host() -> dict[str, Any]:
    return {"kernel": platform.release(), "cpus": os.cpu_count()}


def need_root() -> bool:
    """False (and a line on stderr) when not root: the benchmark needs namespaces, XDP or BPF."""
    if os.geteuid() != 0:
        print("bench: run as root", file=sys.stderr)
        return False
    return True


def write(res: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")


from dinet.netutil import free_port  # noqa: E402,F401 - the benchmarks' import of it
