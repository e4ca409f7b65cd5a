"""Kernel-free: the Maglev ring (dinet.policy.maglev) and the instance-slot plan (dinet.policy.steering) that
both data planes are written from. The fills are worked by hand from given permutations; the plans from
the rule (an instance keeps its slot, a new one takes the first free, a ring only where weights change)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from dinet.errors import ConfigError, TableFullError
from dinet.model import Instance, InstanceLoad, InstanceState, ServiceKey
from dinet.policy import maglev
from dinet.policy.steering import SLOT_NONE, plan_instances

SVC = ServiceKey.parse("10.99.0.1:8000/tcp")


@pytest.fixture
def permutations(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Instance 1 walks the 7 slots from 0 by 1 (0, 1, 2, ...), instance 2 from 3 by 2 (3, 5, 0, 2, 4, ...)."""
    hashes = {(1, b"offset"): 0, (1, b"skip"): 0, (2, b"offset"): 3, (2, b"skip"): 1}
    maglev._build.cache_clear()
    monkeypatch.setattr(maglev, "_h", lambda iid, salt: hashes[(iid, salt)])
    yield
    maglev._build.cache_clear()


def test_equal_weights_take_turns_and_a_taken_slot_sends_an_instance_on_along_its_own_walk(permutations) -> None:
    # 1: 0; 2: 3; 1: 1; 2: 5; 1: 2; 2: 0 and 2 taken, so 4; 1: 3, 4, 5 taken, so 6
    assert maglev.build({1: 1, 2: 1}, 7) == [1, 1, 1, 2, 2, 2, 1]


def test_a_weight_twice_another_claims_twice_per_round(permutations) -> None:
    # credits per round 1 and 0.5: 1: 0; 1: 1, 2: 3; 1: 2; 1: 3 taken so 4, 2: 5; 1: 5 taken so 6
    assert maglev.build({1: 2, 2: 1}, 7) == [1, 1, 1, 2, 1, 2, 1]
    assert maglev.build({2: 1, 1: 2}, 7) == maglev.build({1: 2, 2: 1}, 7)  # the order given does not count


def test_no_weight_no_instance_and_a_size_that_is_not_prime_is_refused() -> None:
    assert maglev.build({1: 0, 2: 0}, 7) == [None] * 7
    assert maglev.build({}, 7) == [None] * 7
    with pytest.raises(ConfigError, match="must be prime, not 4097"):
        maglev.build({1: 1}, 4097)


def test_the_ring_splits_by_weight_and_an_instance_leaving_moves_almost_only_its_own_slots() -> None:
    size, weights = 4099, {1: 1, 2: 3, 3: 6}
    ring = maglev.build(weights, size)
    got = Counter(ring)
    for iid, w in weights.items():
        assert abs(got[iid] - size * w / 10) <= 2, (iid, got)
    without = maglev.build({1: 1, 2: 3}, size)
    moved = sum(1 for old, new in zip(ring, without, strict=True) if old != 3 and old != new)
    assert moved <= size // 100, moved  # the other instances' slots stay theirs (Maglev's minimal disruption)
    for iid, w in {1: 1, 2: 3}.items():
        assert abs(Counter(without)[iid] - size * w / 4) <= 2, (iid, Counter(without))


def inst(iid: int, weight: int = 1, **kw: object) -> Instance:
    return Instance(instance_id=iid, endpoint=f"192.0.2.{100 + iid}", weight=weight, **kw)  # type: ignore[arg-type]


def test_instances_keep_their_slots_a_new_one_takes_the_first_free_and_a_gone_ones_slot_is_freed() -> None:
    a, b, c = inst(1), inst(2), inst(3)
    first = plan_instances(SVC, {}, [a, b], max_instances=4, ring_size=7)
    assert first.placed == {1: 0, 2: 1} and first.changed == {0: a, 1: b} and first.freed == []
    assert first.ring == [first.placed[i] for i in maglev.build({1: 1, 2: 1}, 7)] and first.ring_changed

    # 1 leaves, 3 comes: 2 keeps slot 1, 3 takes slot 2 (slot 0 is emptied only after the ring switches)
    then = plan_instances(SVC, {0: a, 1: b}, [b, c], max_instances=4, ring_size=7)
    assert then.placed == {2: 1, 3: 2} and then.changed == {2: c} and then.freed == [0]
    assert set(then.ring) == {1, 2} and then.ring_changed


def test_a_load_alone_rewrites_the_instance_not_the_ring_and_a_draining_one_leaves_the_ring() -> None:
    a, b = inst(1), inst(2)
    loaded = inst(2, load=InstanceLoad(value=5000, each=300))
    plan = plan_instances(SVC, {0: a, 1: b}, [a, loaded], max_instances=4, ring_size=7)
    assert plan.changed == {1: loaded} and not plan.ring_changed

    draining = inst(2, state=InstanceState.DRAINING)
    plan = plan_instances(SVC, {0: a, 1: b}, [a, draining], max_instances=4, ring_size=7)
    assert plan.changed == {1: draining} and plan.ring == [0] * 7 and plan.ring_changed

    every = plan_instances(SVC, {0: a, 1: b}, [inst(1, state=InstanceState.DRAINING), draining], 4, 7)
    assert every.ring == [SLOT_NONE] * 7  # all draining: a state (new flows dropped and counted), not a mistake


def test_a_plan_that_cannot_be_written_is_refused_naming_why() -> None:
    with pytest.raises(ConfigError, match=r"duplicate instance ids .*\[1, 1\]"):
        plan_instances(SVC, {}, [inst(1), inst(1)], 4, 7)
    with pytest.raises(TableFullError, match="has 3 instances; the node holds at most 2"):
        plan_instances(SVC, {}, [inst(1), inst(2), inst(3)], 2, 7)
    with pytest.raises(ConfigError, match="all weights of .* are zero"):
        plan_instances(SVC, {}, [inst(1, weight=0), inst(2, weight=0)], 4, 7)
