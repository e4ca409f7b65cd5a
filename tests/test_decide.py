"""Decision functions on scenarios: classes, overload, hysteresis. Pure Python."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from dinet.model import Instance, InstanceState, ServiceIntent, ServiceKey, SitePath
from dinet.policy.decide import Candidate, Policy, TrafficClass, damp, decide, target_weights
from dinet.policy.scores import Level0, Level1, ScoreModel

NEAR, FAR = 1, 2


def cands(near_load: float, far_load: float = 0.2) -> list[Candidate]:
    m = ScoreModel()
    return [
        Candidate(1, NEAR, m.level1(Level0(cpu_load=near_load, gpu_util=near_load), delay_ms=2), delay_ms=2),
        Candidate(2, FAR, m.level1(Level0(cpu_load=far_load, gpu_util=far_load), delay_ms=40), delay_ms=40),
    ]


def test_levels() -> None:
    l1 = ScoreModel().level1(
        Level0(cpu_load=0.3, gpu_util=0.8, queue_depth=8, token_latency_ms=50), delay_ms=25, loss=0.01
    )
    assert l1 == Level1(compute=0.8, communication=0.6, service=0.25, queue=0.25)


def test_delay_sensitive_leaves_a_near_site_where_a_queue_forms() -> None:
    """A waiting queue is predicted wait in its TTFT: beyond what the instance runs at once, the place it waits
    for; and short of that, the prefill of every request waiting ahead (a compute-bound engine's prefills
    queue for its steps' token budget before its KV cache is full). A delay-sensitive flow goes where it would
    not wait. Delay-tolerant flows are not moved by the queue alone."""
    m = ScoreModel()
    queued = [
        Candidate(NEAR, NEAR, m.level1(Level0(gpu_util=0.3, queue_depth=12), delay_ms=2), delay_ms=2),
        Candidate(FAR, FAR, m.level1(Level0(gpu_util=0.3), delay_ms=10), delay_ms=10),
    ]
    w = target_weights(queued, TrafficClass.DELAY_SENSITIVE)
    assert w[NEAR] == 0 and w[FAR] > 0
    short = [replace(queued[0], l1=m.level1(Level0(gpu_util=0.3, queue_depth=2), delay_ms=2)), queued[1]]
    w = target_weights(short, TrafficClass.DELAY_SENSITIVE)
    # two waiting where it runs more at once: their prefills (2 x 50 ms) cost more than the far site's 32 ms
    # of round trips (2 x 2 x (10 - 2) ms)
    assert w[NEAR] == 0 and w[FAR] > 0
    none = [replace(queued[0], l1=m.level1(Level0(gpu_util=0.3), delay_ms=2)), queued[1]]
    w = target_weights(none, TrafficClass.DELAY_SENSITIVE)
    assert w[NEAR] > 0 and w[FAR] == 0  # nothing waiting: it stays near
    both = [queued[0], replace(queued[1], l1=m.level1(Level0(queue_depth=20), delay_ms=10))]
    w = target_weights(both, TrafficClass.DELAY_SENSITIVE)
    assert w[NEAR] > 0 and w[FAR] == 0  # queues everywhere: the shorter predicted wait
    assert target_weights(queued, TrafficClass.DELAY_TOLERANT)[NEAR] > 0


def test_delay_sensitive_stays_near_until_overloaded() -> None:
    w = target_weights(cands(0.7), TrafficClass.DELAY_SENSITIVE)
    assert w[1] > 0 and w[2] == 0  # busy but not overloaded: stays local
    w = target_weights(cands(0.95), TrafficClass.DELAY_SENSITIVE)
    assert w[1] == 0 and w[2] > 0  # overloaded: moves


def test_delay_tolerant_leaves_a_busy_near_site_first() -> None:
    tolerant = target_weights(cands(0.7), TrafficClass.DELAY_TOLERANT)
    sensitive = target_weights(cands(0.7), TrafficClass.DELAY_SENSITIVE)
    assert tolerant[2] > tolerant[1] > 0  # the far, idle site takes most of the tolerant jobs
    assert sensitive[1] > 0 and sensitive[2] == 0  # while the avatar stream stays local
    idle = target_weights(cands(0.1), TrafficClass.DELAY_TOLERANT)
    assert idle[2] > idle[1] > 0.5 * idle[2]  # idle: near is given up first, but keeps a share


def test_down_instances_and_all_overloaded() -> None:
    cs = cands(0.2)
    cs[0] = Candidate(1, NEAR, cs[0].l1, up=False)
    w = target_weights(cs, TrafficClass.DELAY_SENSITIVE)
    assert w[1] == 0 and w[2] > 0  # the near instance is down: the far one serves
    hot = cands(0.97, 0.99)
    assert target_weights(hot, TrafficClass.DELAY_TOLERANT) == {1: 1, 2: 0}  # least loaded keeps a trickle


def test_hysteresis_holds_two_similar_sites_still() -> None:
    """Loads of two sites wobble around each other: the installed weights do not flip with them."""
    p = Policy()
    installed: dict[int, int] = {}
    history = []
    for step in range(40):
        wobble = 0.05 * math.sin(step)
        w = target_weights(cands(0.5 + wobble, 0.5 - wobble), TrafficClass.DELAY_TOLERANT, p)
        installed = damp(installed, w, p)
        history.append(dict(installed))
    changes = sum(1 for a, b in zip(history, history[1:], strict=False) if a != b)
    assert changes <= 2, history[:6]
    # a real shift still gets through, in steps
    w = target_weights(cands(0.1, 0.85), TrafficClass.DELAY_TOLERANT, p)
    after = damp(installed, w, p)
    assert after[1] > installed[1] and after[2] < installed[2]


def test_zero_weights_and_new_instances_are_immediate() -> None:
    assert damp({1: 50, 2: 50}, {1: 0, 2: 60, 3: 40}) == {1: 0, 2: 50, 3: 40}


def test_the_baselines_place_flows_as_their_names_say() -> None:
    import random

    from dinet.policy.decide import Strategy

    # a near busy site (1), a far idle one (2), a down instance (3)
    near = Candidate(1, 1, Level1(compute=0.8, communication=0.1, service=0.1), delay_ms=5)
    far = Candidate(2, 2, Level1(compute=0.0, communication=0.8, service=0.1), delay_ms=40)
    dead = Candidate(3, 2, Level1(compute=0.0, communication=0.8, service=0.1), up=False, delay_ms=40)
    cands = [near, far, dead]

    def weights(s: Strategy, seed: int = 1) -> dict[int, int]:
        return target_weights(cands, TrafficClass.DELAY_SENSITIVE, Policy(strategy=s), random.Random(seed))

    assert weights(Strategy.ANYCAST) == {1: 100, 2: 0, 3: 0}  # the nearest, busy or not
    compute_only = weights(Strategy.COMPUTE_ONLY)
    assert compute_only[2] > compute_only[1] > 0 and compute_only[3] == 0  # the idle far one first
    assert weights(Strategy.ROUND_ROBIN) == {1: 100, 2: 100, 3: 0}
    draws = {tuple(weights(Strategy.RANDOM, seed).values()) for seed in range(20)}
    assert len(draws) > 1 and all(d[2] == 0 and d[0] > 0 and d[1] > 0 for d in draws)
    assert weights(Strategy.RANDOM, 7) == weights(Strategy.RANDOM, 7)  # a seed repeats a run
    dinet = weights(Strategy.DINET)
    assert dinet[1] > 0 and dinet[2] == 0  # delay-sensitive: busy, not full: its TTFT is 70 ms below the far one's


# ---- decide(): the whole decision as one pure function, table of hand-worked cases ----------------------

_SVC = ServiceKey.parse("10.99.0.1:80/tcp")
_I1, _I2 = Instance(1, "192.0.2.1", 1, site_id=1), Instance(2, "192.0.2.2", 1, site_id=2)
_PATHS = {1: SitePath(2, security=3), 2: SitePath(20, security=0)}
_UNDAMPED = Policy(smoothing=1.0, hysteresis=0.0)
_IDLE = Level0(cpu_load=0.0)


def _ws(out: list[Instance]) -> dict[int, tuple[int, str]]:
    return {i.instance_id: (i.weight, i.state.name.lower()) for i in out}


# delay-tolerant: score = (headroom + 0.05) x (2 + communication) / 3, weights in proportion to the top score
# (100). With the priors (8 requests at once, 5 s each) an idle instance has 8 / 5 = 1.6 req/s of headroom:
# at 2 ms (communication 0.04) 1.65 x 0.68 = 1.122, at 20 ms (0.4) 1.65 x 0.8 = 1.32: weights 85 and 100;
# CPU 0.5 halves the capacity (headroom 0.8): alone, it is the top (100)
DECIDE_CASES = [
    # name, intent changes, samples, expired, installed, expected {id: (weight, state)}
    ("both-idle-tolerant", {}, {1: _IDLE, 2: _IDLE}, set(), (), {1: (85, "up"), 2: (100, "up")}),
    (
        "operator-down-keeps-installed-weight",
        {"instances": (replace(_I1, state=InstanceState.DOWN), _I2)},
        {1: _IDLE, 2: _IDLE},
        set(),
        (replace(_I1, weight=7), _I2),
        {1: (7, "down"), 2: (100, "up")},
    ),
    (
        "below-security-floor-never-a-flow",
        {"min_security": 2},
        {1: _IDLE, 2: _IDLE},
        set(),
        (),
        {1: (100, "up"), 2: (0, "down")},
    ),
    ("expired-drains", {}, {1: _IDLE}, {2}, (), {1: (100, "up"), 2: (0, "draining")}),
    (
        "unheard-keeps-what-the-record-holds",
        {},
        {1: Level0(cpu_load=0.5)},
        set(),
        (_I1, replace(_I2, weight=42)),
        {1: (100, "up"), 2: (42, "up")},
    ),
    (
        "unheard-takes-the-intent-when-the-record-is-another-set",
        {},
        {1: Level0(cpu_load=0.5)},
        set(),
        (_I1, replace(_I2, weight=42, endpoint="192.0.2.99")),
        {1: (100, "up"), 2: (1, "up")},
    ),
    (
        "everything-overloaded-keeps-a-trickle-on-the-least-loaded",
        {},
        {1: Level0(cpu_load=0.97), 2: Level0(cpu_load=0.95)},
        set(),
        (),
        {1: (0, "up"), 2: (1, "up")},
    ),
    ("unhealthy-is-down", {}, {1: _IDLE, 2: Level0(healthy=False)}, set(), (), {1: (100, "up"), 2: (0, "down")}),
]


@pytest.mark.parametrize(
    "changes,samples,expired,installed,want", [c[1:] for c in DECIDE_CASES], ids=[c[0] for c in DECIDE_CASES]
)
def test_decide_table(changes, samples, expired, installed, want) -> None:
    intent = replace(ServiceIntent(_SVC, TrafficClass.DELAY_TOLERANT, (_I1, _I2)), **changes)
    assert _ws(decide(intent, samples, expired, _PATHS, installed, _UNDAMPED)) == want


def test_decide_counts_a_transfer_at_the_paths_rate_as_delay() -> None:
    """8 MiB over 1 Gbit/s is 67 ms, over 100 Mbit/s 671 ms: the slower path is farther for a
    delay-sensitive flow although both are 5 ms away."""
    paths = {1: SitePath(5, bw_mbit=100), 2: SitePath(5, bw_mbit=1000)}
    intent = ServiceIntent(_SVC, TrafficClass.DELAY_SENSITIVE, (_I1, _I2), transfer_kb=8192)
    assert paths[1].transfer_ms(8192) == pytest.approx(655.36)
    got = _ws(decide(intent, {1: _IDLE, 2: _IDLE}, set(), paths, (), _UNDAMPED))
    assert got[1][0] == 0 and got[2][0] > 0


def test_decide_is_pure_the_same_inputs_give_the_same_plan() -> None:
    intent = ServiceIntent(_SVC, TrafficClass.DELAY_TOLERANT, (_I1, _I2))
    samples = {1: Level0(cpu_load=0.3), 2: Level0(cpu_load=0.6)}
    installed = (replace(_I1, weight=50), replace(_I2, weight=50))
    a = decide(intent, samples, set(), _PATHS, installed, Policy())
    b = decide(intent, samples, set(), _PATHS, installed, Policy())
    assert a == b and installed == (replace(_I1, weight=50), replace(_I2, weight=50))
