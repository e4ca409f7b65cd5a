"""How many flows the P4 program's affinity table cannot remember (p4/steering.p4): a two-way table indexed by
two hashes of the 5-tuple, fields in the order the P4 program hashes them (until this change: 65,536 entries
and v1model's crc16, CRC-16/ARC). A
new flow whose two entries both hold other live flows is steered but not remembered, so a later weight
change may move it. This replays F live flows (random client addresses and ports toward one VIP:port) into
the table as the program does and counts the flows left out, for the default size (65,536), a table four
times larger indexed by CRC-32 (the program's default now), and a four-way table of 65,536 entries (two more
hashes over other field orders), so that the choice is made on figures. Pure Python: no switch needed.

    .venv/bin/python -m bench.p4_affinity [--quick]
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import zlib
from pathlib import Path

from bench.common import host, write


def _table() -> list[int]:
    out = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
        out.append(c)
    return out


TABLE = _table()


def crc16(data: bytes) -> int:
    """CRC-16/ARC (reflected 0x8005, init 0): BMv2's crc16."""
    c = 0
    for b in data:
        c = (c >> 8) ^ TABLE[(c ^ b) & 0xFF]
    return c


def indexes(
    src: bytes, dst: bytes, sport: int, dport: int, proto: int, size: int, ways: int, hash_fn: str
) -> list[int]:
    p = struct.pack("!HH", sport, dport)
    r = struct.pack("!HH", dport, sport)
    orders = [src + dst + p + bytes([proto]), r + dst + src + bytes([proto])]  # as steering.p4 hashes them
    orders += [dst + p + src + bytes([proto]), bytes([proto]) + r + src + dst][: max(0, ways - 2)]
    fn = crc16 if hash_fn == "crc16" else zlib.crc32  # v1model's crc32 is zlib's
    return [fn(o) % size for o in orders]


def left_out(flows: int, size: int, ways: int, hash_fn: str, rng: random.Random) -> int:
    taken: set[int] = set()
    missed = 0
    vip = bytes([10, 99, 0, 1])
    for _ in range(flows):
        src = rng.randbytes(4)
        idx = indexes(src, vip, rng.randrange(1024, 65536), 80, 6, size, ways, hash_fn)
        free = [i for i in idx if i not in taken]
        if free:
            taken.add(free[0])
        else:
            missed += 1
    return missed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="flow counts up to 30,000 (seconds)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "p4_affinity.json")
    a = ap.parse_args()
    counts = [1_000, 10_000, 30_000] if a.quick else [1_000, 10_000, 30_000, 50_000, 60_000]
    layouts = {
        "before: 2-way 65,536 crc16": (65_536, 2, "crc16"),
        "2-way 262,144 crc32": (262_144, 2, "crc32"),
        "4-way 65,536 crc32": (65_536, 4, "crc32"),
    }
    rng = random.Random(14)
    rows = []
    print("live flows  " + "  ".join(f"{name:>27s}" for name in layouts) + "   (share of flows not remembered)")
    for f in counts:
        row = {"flows": f}
        for name, (size, ways, fn) in layouts.items():
            row[name] = left_out(f, size, ways, fn, rng) / f
        rows.append(row)
        print(f"{f:10,d}  " + "  ".join(f"{row[n]:27.4%}" for n in layouts), flush=True)
    write({"host": host(), "rows": rows, "bytes_per_entry": 55}, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
