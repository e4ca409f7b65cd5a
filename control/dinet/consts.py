"""The constants of ebpf/dinet_consts.h, read from that one file (the C and P4 sources include it)."""

import re
from functools import cache
from pathlib import Path

from .paths import EBPF_DIR

_DEFINE = re.compile(r"^\s*#define\s+([A-Z][A-Z0-9_]*)\s+(0[xX][0-9a-fA-F]+|\d+)\s*(?:/\*.*)?$")


@cache
def load(path: Path | None = None) -> dict[str, int]:
    """Every integer #define of the header (the defaults where a size is guarded by #ifndef)."""
    text = (path or EBPF_DIR / "dinet_consts.h").read_text()
    return {m.group(1): int(m.group(2), 0) for line in text.splitlines() if (m := _DEFINE.match(line))}


def get(name: str) -> int:
    try:
        return load()[name]
    except KeyError:
        raise KeyError(f"{name} is not defined in dinet_consts.h") from None


def verdict_names() -> dict[int, str]:
    """Verdict counter index -> readable name ('drop_malformed', 'pass_not_service', ...)."""
    out = {}
    for name, value in load().items():
        if name.startswith(("DINET_DROP_", "DINET_PASS_", "DINET_DECAP_", "DINET_ICMP_")):
            out[value] = name.removeprefix("DINET_").lower()
    return out
