"""Steering policy shared by every target: which slot each instance takes and what the ring holds. Pure
Python; a target only turns the plan into writes (and writes in the order the plan's comments give)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .. import consts
from ..errors import ConfigError, TableFullError
from ..model import Instance, InstanceState, ServiceKey
from . import maglev

SLOT_NONE = consts.get("DINET_SLOT_NONE")


@dataclass(frozen=True)
class InstancePlan:
    placed: dict[int, int]  # instance id -> slot (kept for instances the service already has)
    ring: list[int]  # the ring: slot per position, SLOT_NONE where no instance is usable
    changed: dict[int, Instance]  # slot -> instance to write before the ring switches
    freed: list[int]  # slots to empty after the ring switches
    ring_changed: bool = True  # False: the ring the data plane holds is this one (only loads changed)


def plan_instances(
    svc: ServiceKey, current: dict[int, Instance], instances: Iterable[Instance], max_instances: int, ring_size: int
) -> InstancePlan:
    wanted = list(instances)
    ids = [i.instance_id for i in wanted]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"duplicate instance ids for {svc}: {sorted(ids)}")
    if len(wanted) > max_instances:
        raise TableFullError(f"{svc} has {len(wanted)} instances; the node holds at most {max_instances} per service")
    if any(i.state == InstanceState.UP for i in wanted) and not any(i.usable for i in wanted):
        # instances up but none with a weight: a mistake (all down or draining is a state, not a mistake)
        raise ConfigError(f"all weights of {svc} are zero: give at least one instance a weight, or drain the instances")
    slot_of = {inst.instance_id: slot for slot, inst in current.items()}
    free = (s for s in range(max_instances) if s not in current)
    placed = {i.instance_id: slot_of[i.instance_id] if i.instance_id in slot_of else next(free) for i in wanted}
    changed = {placed[i.instance_id]: i for i in wanted if current.get(placed[i.instance_id]) != i}
    table = maglev.build({i.instance_id: i.weight for i in wanted if i.usable}, ring_size)
    ring = [SLOT_NONE if iid is None else placed[iid] for iid in table]
    freed = [slot for slot, inst in current.items() if inst.instance_id not in placed]
    # the ring is a function of the usable instances' weights and slots: the same inputs, the same ring
    ring_inputs = {placed[i.instance_id]: (i.instance_id, i.weight) for i in wanted if i.usable}
    held = {slot: (i.instance_id, i.weight) for slot, i in current.items() if i.usable}
    ring_changed = not current or ring_inputs != held
    return InstancePlan(placed, ring, changed, freed, ring_changed)
