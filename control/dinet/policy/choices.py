"""Two choices in the data plane (dinet_consts.h, DINET_SVC_TWO_CHOICES; ebpf/steer.bpf.c two_choices(),
p4/steering.p4): a new flow of a two-choices service takes two candidates from the weighted ring, the first where
every flow's hash points, the second where the same fields hashed in the reverse order point, and goes to the
one with the lower load: the controller's last (`InstanceLoad`) plus what the flows the data plane placed there
since add. Pure: the reference the packet tests and the fuzzers compare both data planes with.

Why in the data plane: between two metric reports (hundreds of milliseconds) a burst of new flows lands wherever
the weights point; the data plane counts what it placed itself, so the burst spreads over the two candidates at
once (the power of two choices: Mitzenmacher 2001), while the weights keep the ring's long-run split."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..model import Instance, InstanceLoad, InstanceState, IPAddress
from .session import flow_hash

NO_LOAD = InstanceLoad(0, 1, 0, 1)  # what the data planes use where no load was written (every flow counts 1)


def default_placement(tier_order: Sequence[str], policy: str | None = None) -> str:
    """dinet's placement for a service whose intent names none: two choices for a tiered service that dinet's
    policy steers (`policy` None or dinet), the ring by the 5-tuple otherwise (a baseline is compared as it
    is). A tiered service's weights point at its preferred tier until a report shows it full,
    so a burst of new flows between two reports overfills it, and within a small tier a burst lands on one
    instance: in the tiers experiment's full run at 07e01aa two choices met the SLO for 0.99 of the top
    step's requests, the ring 0.89 (README, tiers). Elsewhere the weights spread over instances by headroom:
    on cloud-edge the two tied (0.92 each), so the ring stays (a new two-choices flow costs ~90 ns more in
    XDP)."""
    return "two-choices" if tier_order and policy in (None, "dinet") else "flow"


def flow_hash2(src: IPAddress, dst: IPAddress, sport: int, dport: int, proto: int) -> int:
    """The second candidate's hash: CRC-32 over destination port, source port, destination, source, protocol."""
    return zlib.crc32(dport.to_bytes(2, "big") + sport.to_bytes(2, "big") + dst.packed + src.packed + bytes([proto]))


def candidates(ring: list[int], src: IPAddress, dst: IPAddress, sport: int, dport: int, proto: int) -> tuple[int, int]:
    """The ring's two slots for a new flow (the first is where a ring-placed flow goes)."""
    n = len(ring)
    return ring[flow_hash(src, dst, sport, dport, proto) % n], ring[flow_hash2(src, dst, sport, dport, proto) % n]


@dataclass
class Placed:
    """The data plane's count of new flows placed per slot, under the load of report `gen` (inst_placed)."""

    gen: dict[int, int] = field(default_factory=dict)
    count: dict[int, int] = field(default_factory=dict)

    def placed(self, slot: int, load: InstanceLoad | None) -> int:
        """Flows placed on the slot under this load's report (0 once a new report's load is written)."""
        seq = load.seq if load else 0
        return self.count.get(slot, 0) if self.gen.get(slot, 0) == seq else 0

    def now(self, slot: int, load: InstanceLoad | None) -> int:
        """The slot's load now, as the data plane computes it."""
        return (load or NO_LOAD).now(self.placed(slot, load))

    def add(self, slot: int, load: InstanceLoad | None) -> None:
        self.gen[slot], self.count[slot] = (load.seq if load else 0), self.placed(slot, load) + 1


def choose(first: int, second: int, instances: Mapping[int, Instance], placed: Placed) -> int:
    """The slot a new flow goes to (and counts it there): the second candidate where it is up, another slot,
    and its load lower; else the first (ties too)."""
    a, b = instances[first], instances.get(second)
    if b is not None and second != first and b.state == InstanceState.UP:
        if placed.now(second, b.load) < placed.now(first, a.load):
            placed.add(second, b.load)
            return second
    placed.add(first, a.load)
    return first
