"""Weighted Maglev lookup tables (Eisenbud et al., NSDI 2016, s3.4), filled for the data planes' rings.

Each instance walks its own permutation of the table's slots (offset and skip from a hash of its id, so
the permutation does not depend on the other instances or on the order they are listed); in each round
an instance claims slots in proportion to its weight. A weight change or an instance leaving moves only
a small share of the slots, so few *new* flows change instance; established flows never move at all
because the data planes keep them in their affinity tables.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import lru_cache

from ..errors import ConfigError


def _h(instance_id: int, salt: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(instance_id.to_bytes(8, "big"), digest_size=8, key=salt).digest(), "big")


def build(weights: Mapping[int, int], size: int) -> list[int | None]:
    """The table: slot -> instance id (None everywhere when no instance has weight).

    `size` must be prime (every skip is then coprime with it and each permutation covers every slot)."""
    return list(_build(tuple(sorted(weights.items())), size))


@lru_cache(maxsize=64)
def _build(weights: tuple[tuple[int, int], ...], size: int) -> tuple[int | None, ...]:
    if size < 2 or any(size % d == 0 for d in range(2, int(size**0.5) + 1)):
        raise ConfigError(f"Maglev table size must be prime, not {size}")
    live = [(iid, w) for iid, w in weights if w > 0]
    table: list[int | None] = [None] * size
    if not live:
        return tuple(table)
    perm = {iid: (_h(iid, b"offset") % size, _h(iid, b"skip") % (size - 1) + 1) for iid, _ in live}
    nxt = {iid: 0 for iid, _ in live}
    credit = {iid: 0.0 for iid, _ in live}
    wmax = max(w for _, w in live)
    filled = 0
    while True:
        for iid, w in live:
            credit[iid] += w / wmax
            while credit[iid] >= 1.0:
                credit[iid] -= 1.0
                offset, skip = perm[iid]
                slot = (offset + nxt[iid] * skip) % size
                while table[slot] is not None:
                    nxt[iid] += 1
                    slot = (offset + nxt[iid] * skip) % size
                table[slot] = iid
                nxt[iid] += 1
                filled += 1
                if filled == size:
                    return tuple(table)
