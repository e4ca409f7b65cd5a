"""Predicted latency per instance (dinet.policy.predict) and the placement on it (dinet.policy.decide): hand-
worked cases, no kernel."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dinet.model import Instance, ServiceIntent, ServiceKey, SitePath, Slo, Strategy, TrafficClass
from dinet.policy.decide import Policy, decide
from dinet.policy.predict import Priors, Rates, learn, predict
from dinet.policy.scores import Level0

SVC = ServiceKey.parse("10.99.0.1:8000/tcp")
UNDAMPED = Policy(smoothing=1.0, hysteresis=0.0)


def test_rates_are_learned_from_reports() -> None:
    # 4 running, 0.5 finished/s: by Little's law each holds its place 8 s; 40 tokens/s over 0.5 requests/s:
    # 80 tokens a request; half the KV cache for 4 requests: 8 at once; no queue: its TTFT is the prefill
    r = learn(
        Rates(),
        Level0(
            active_sessions=4,
            finished_per_s=0.5,
            tokens_per_s=40,
            kv_usage=0.5,
            ttft_ms=120,
            token_latency_ms=90,
        ),
    )
    assert r == Rates(
        service_s=8.0, capacity=8.0, prefill_ms=120.0, tpot_ms=90.0, tokens_per_request=80.0, observations=1
    )
    # the next report moves each average 0.3 of the way: 6 s, 60 tokens, 10 at once
    r2 = learn(r, Level0(active_sessions=6, finished_per_s=1.0, tokens_per_s=60, kv_usage=0.6, token_latency_ms=90))
    assert (r2.service_s, r2.tokens_per_request, r2.capacity) == pytest.approx((7.4, 74.0, 8.6))
    assert r2.prefill_ms == 120.0  # no TTFT in that interval: kept
    # requests wait: what runs is all it holds; a TTFT measured behind a queue is not the prefill
    r3 = learn(Rates(), Level0(active_sessions=5, queue_depth=3, ttft_ms=900, kv_usage=0.4))
    assert r3.capacity == 5.0 and r3.prefill_ms == 0.0
    # lightly loaded (2 running, none waiting): also what it decodes at unloaded; its prefill unloaded only from
    # the server's own measure (r6): a TTFT observed as a burst ends carries the burst's queue
    r4 = learn(Rates(), Level0(active_sessions=2, finished_per_s=0.5, ttft_ms=70, token_latency_ms=91))
    assert (r4.prefill_ms, r4.prefill_idle_ms, r4.tpot_idle_ms) == (70.0, 0.0, 91.0)
    # the server's own prefill phase (vLLM's request_prefill_time) has no queue in it: learned while requests
    # wait too, and before the TTFT where both are there
    r5 = learn(Rates(), Level0(active_sessions=5, queue_depth=3, ttft_ms=900, prefill_ms=110, kv_usage=0.4))
    assert (r5.prefill_ms, r5.prefill_idle_ms) == (110.0, 0.0)
    r6 = learn(Rates(), Level0(active_sessions=1, ttft_ms=95, prefill_ms=80))
    assert (r6.prefill_ms, r6.prefill_idle_ms) == (80.0, 80.0)


def test_an_instance_a_burst_slowed_is_chosen_again_once_it_is_idle() -> None:
    """Under a burst the edge's TPOT was 600 ms (learned); idle again, it is predicted from what it does
    lightly loaded (its prior's 90 ms a token), so it takes flows again instead of being shunned for ever."""
    from dinet.model import InstancePrior
    from dinet.policy.predict import seeded

    burst = Rates(service_s=8.0, capacity=30.0, prefill_ms=900.0, tpot_ms=600.0, tokens_per_request=60.0)
    prior = InstancePrior(service_s=6.0, capacity=20.0, prefill_ms=130.0, tpot_ms=90.0)
    r = seeded(burst, prior)
    busy = predict(Level0(active_sessions=10, token_latency_ms=600), r, delay_ms=2)
    idle = predict(Level0(), r, delay_ms=2)
    assert busy.tpot_ms == 600 and (idle.tpot_ms, idle.ttft_ms) == (90.0, 8 + 130.0)


def test_predicted_ttft_counts_the_path_the_transfer_the_queue_and_the_prefill() -> None:
    edge = Rates(service_s=8.0, capacity=8.0, prefill_ms=120.0, tpot_ms=90.0, tokens_per_request=80.0)
    # 8 running, 3 waiting, 8 at once: a new request waits for 4 to finish at 1 a second (8 / 8 s)
    p = predict(Level0(active_sessions=8, queue_depth=3, token_latency_ms=90), edge, delay_ms=2)
    # two round trips of 4 ms (a new connection's handshake, then the request) + the wait + the prefill
    assert (p.wait_ms, p.ttft_ms, p.tpot_ms, p.headroom) == pytest.approx((4000.0, 4128.0, 90.0, 0.0))
    assert p.e2e_ms == pytest.approx(4128.0 + 80 * 90)
    cloud = Rates(service_s=3.0, capacity=200.0, prefill_ms=30.0, tpot_ms=20.0, tokens_per_request=80.0)
    q = predict(Level0(), cloud, delay_ms=25, transfer_ms=8.0, loss=0.01)
    # 2 x 50 ms round trips + 8 ms transfer + no wait + 30 ms prefill + 1% loss x 1 s; 200 free at 3 s each
    assert (q.ttft_ms, q.tpot_ms, q.headroom) == pytest.approx((148.0, 20.0, 200 / 3))
    # before any report: the priors
    assert predict(Level0(), Rates(), 0.0).ttft_ms == Priors().prefill_ms


def _svc(*sites: int, slo: Slo | None = None, cls: TrafficClass = TrafficClass.DELAY_SENSITIVE) -> ServiceIntent:
    insts = tuple(Instance(k + 1, f"192.0.2.{k + 1}", 1, site_id=s) for k, s in enumerate(sites))
    return ServiceIntent(SVC, cls, insts, slo=slo or Slo())


def _weights(intent: ServiceIntent, samples: dict, rates: dict, paths: dict) -> dict[int, int]:
    return {i.instance_id: i.weight for i in decide(intent, samples, set(), paths, (), UNDAMPED, None, rates)}


EDGE = Rates(service_s=8.0, capacity=8.0, prefill_ms=65.0, tpot_ms=90.0, tokens_per_request=60.0)
CLOUD = Rates(service_s=2.0, capacity=256.0, prefill_ms=8.0, tpot_ms=20.0, tokens_per_request=60.0)
PATHS = {1: SitePath(2), 2: SitePath(25)}


FAST_EDGE = Rates(service_s=2.0, capacity=8.0, prefill_ms=10.0, tpot_ms=20.0, tokens_per_request=60.0)
# a small instance as the two-choices tests see it: 64 at once, 5 s each, a prompt's prefill 230 ms as it
# measured lightly loaded (2 running, none waiting)
SMALL = replace(
    learn(Rates(), Level0(active_sessions=2, prefill_ms=230.0, token_latency_ms=100.0)), service_s=5.0, capacity=64.0
)


def test_a_near_edge_shares_while_it_keeps_the_margin_and_leaves_when_a_request_would_wait() -> None:
    """The edge is 2 ms away, the cloud 25 ms; both decode at 20 ms a token. Against an SLO of 1 s TTFT and
    250 ms TPOT the edge uses 0.08 of it (TPOT is the tighter), the cloud 0.108 (TTFT: 2 round trips of 50 ms
    and 8 ms of prefill): both take flows, by headroom (8 / 2 s = 4 req/s against 256 / 2 s) x
    exp(-0.028 / 0.1). Once the edge runs 8 and one waits, a new request would wait 0.5 s there (0.5 of the
    TTFT objective): the cloud alone."""
    import math

    intent = _svc(1, 2, slo=Slo(ttft_ms=1000, tpot_ms=250))
    idle = _weights(intent, {1: Level0(), 2: Level0()}, {1: FAST_EDGE, 2: CLOUD}, PATHS)
    assert idle == {1: round(100 * 4.05 / (128.05 * math.exp(-0.028 / 0.1))), 2: 100}
    full = _weights(
        intent,
        {1: Level0(active_sessions=8, queue_depth=1, kv_usage=0.9), 2: Level0()},
        {1: FAST_EDGE, 2: CLOUD},
        PATHS,
    )
    assert full == {1: 0, 2: 100}


def test_token_latency_weighs_against_the_path() -> None:
    """An edge GPU at 90 ms a token uses 0.36 of a 250 ms TPOT objective, the far cloud's 20 ms 0.08: the
    cloud keeps more margin, however near the edge. Once the cloud's path is slow enough that its TTFT uses
    more of the SLO than the edge's TPOT does, by more than the slack (0.1; a 300 ms one-way path: 1.21), the
    edge is the choice."""
    intent = _svc(1, 2, slo=Slo(ttft_ms=1000, tpot_ms=250))
    w = _weights(intent, {1: Level0(), 2: Level0()}, {1: EDGE, 2: CLOUD}, PATHS)
    assert w == {1: 0, 2: 100}
    slow = _weights(intent, {1: Level0(), 2: Level0()}, {1: EDGE, 2: CLOUD}, {1: SitePath(2), 2: SitePath(300)})
    assert slow == {1: 100, 2: 0}


def test_equal_instances_share_by_headroom_so_the_best_is_not_flooded() -> None:
    """Two instances at one site, the same rates: one has 6 of its 8 places taken. New flows go 2 : 8."""
    intent = _svc(1, 1, slo=Slo(ttft_ms=1000))
    samples = {1: Level0(active_sessions=6, kv_usage=0.75), 2: Level0()}
    w = _weights(intent, samples, {1: EDGE, 2: EDGE}, PATHS)
    # headroom 2/8 and 8/8 req/s, + 0.05 each: 0.3 : 1.05
    assert w == {1: round(100 * 0.3 / 1.05), 2: 100}


def test_without_an_slo_a_delay_sensitive_flow_stays_near_while_nothing_waits() -> None:
    intent = _svc(1, 2)
    w = _weights(intent, {1: Level0(), 2: Level0()}, {1: EDGE, 2: EDGE}, PATHS)
    assert w == {1: 100, 2: 0}  # 4 + 65 ms against 50 + 65 ms: beyond the 10 ms slack
    busy = _weights(intent, {1: Level0(active_sessions=8, queue_depth=2), 2: Level0()}, {1: EDGE, 2: EDGE}, PATHS)
    assert busy == {1: 0, 2: 100}


def test_delay_tolerant_gives_up_the_near_instance_first() -> None:
    intent = _svc(1, 2, cls=TrafficClass.DELAY_TOLERANT)
    w = _weights(intent, {1: Level0(), 2: Level0()}, {1: EDGE, 2: EDGE}, {1: SitePath(2), 2: SitePath(40)})
    # the same headroom (1.05); (2 + 0.04) / 3 against (2 + 0.8) / 3
    assert w == {1: round(100 * 2.04 / 2.8), 2: 100}


def test_an_instances_prior_stands_in_until_its_reports_teach_the_rate() -> None:
    from dinet.model import InstancePrior
    from dinet.policy.predict import seeded

    prior = InstancePrior(service_s=6.0, capacity=8.0, prefill_ms=130.0, tpot_ms=90.0)
    assert seeded(Rates(), prior) == Rates(
        service_s=6.0, capacity=8.0, prefill_ms=130.0, tpot_ms=90.0, prefill_idle_ms=130.0, tpot_idle_ms=90.0
    )
    assert seeded(Rates(tpot_ms=30.0), prior).tpot_ms == 30.0  # learned: the report's figure wins
    # in a decision: an idle edge known to decode at 90 ms a token against a cloud known for 20 ms
    intent = replace(
        _svc(1, 2, slo=Slo(ttft_ms=1000, tpot_ms=250)),
        priors={1: prior, 2: InstancePrior(service_s=2.0, capacity=256.0, prefill_ms=10.0, tpot_ms=20.0)},
    )
    assert _weights(intent, {1: Level0(), 2: Level0()}, {}, PATHS) == {1: 0, 2: 100}


def test_a_two_choices_service_carries_each_instances_predicted_ttft_and_its_growth_to_the_data_plane() -> None:
    """Hand-worked: the edge (8 at once, 2 s each) runs 5, so a new request waits nowhere: TTFT 2 x 4 ms + 10 ms
    of prefill = 18 ms; each request placed there adds its prefill (10 ms) to the next one's first token; 2 more
    fit before one waits (8 - 5 - 1), then each also adds 2 s / 8 = 250 ms. The cloud (256 at once, 2 s each)
    is idle: 2 x 50 ms + 8 ms = 108 ms, 8 ms more each, 255 fit, then 7,812.5 us each (rounded half to even).
    The seq is the report the load is of (the learned rates' observations + 1): the data plane restarts its
    counts when it changes. The same service without two choices carries no load; a baseline neither."""
    from dinet.model import InstanceLoad

    intent = replace(_svc(1, 2, slo=Slo(ttft_ms=1000, tpot_ms=250)), two_choices=True)
    rates = {1: replace(FAST_EDGE, observations=6), 2: replace(CLOUD, observations=9)}
    samples = {1: Level0(active_sessions=5), 2: Level0()}
    got = {i.instance_id: i.load for i in decide(intent, samples, set(), PATHS, (), UNDAMPED, None, rates)}
    assert got == {1: InstanceLoad(18_000, 250_000, 2, 7, 10_000), 2: InstanceLoad(108_000, 7_812, 255, 10, 8_000)}
    plain = replace(intent, two_choices=False)
    assert all(i.load is None for i in decide(plain, samples, set(), PATHS, (), UNDAMPED, None, rates))
    rr = replace(intent, strategy=Strategy.ROUND_ROBIN)
    assert all(i.load is None for i in decide(rr, samples, set(), PATHS, (), UNDAMPED, None, rates))
    # the same report again: the same loads, so nothing is written; a new report (seq) is a new load
    installed = tuple(decide(intent, samples, set(), PATHS, (), UNDAMPED, None, rates))
    again = decide(intent, samples, set(), PATHS, installed, UNDAMPED, None, rates)
    assert all(a is b for a, b in zip(again, installed, strict=True))
    rates[1] = replace(rates[1], observations=7)
    moved = {i.instance_id: i.load for i in decide(intent, samples, set(), PATHS, installed, UNDAMPED, None, rates)}
    assert moved[1] == InstanceLoad(18_000, 250_000, 2, 8, 10_000) and moved[2] == got[2]


def test_a_requests_prefill_is_the_one_the_instance_measured_lightly_loaded_before_its_prior() -> None:
    """A request's own prefill, in its predicted TTFT and in what each flow placed there adds to the next one's
    (the per-flow part of a two-choices load), is the one the instance's own reports measured lightly loaded
    (vLLM's request_prefill_time at 2 running, none waiting: 230 ms, the prompts it is really sent) before its
    prior's (a profile's 41 ms for a short prompt): TTFT 2 x 2 x 2 ms + 230 ms = 238 ms. Without a light-load
    measure, the prior's (8 + 41 = 49 ms); without either, the prefill it measured under load (700 ms)."""
    from dinet.model import InstanceLoad, InstancePrior
    from dinet.policy.predict import learn

    prior = InstancePrior(service_s=5.0, capacity=64.0, prefill_ms=41.0, tpot_ms=90.0)
    intent = replace(_svc(1, 2, slo=Slo(ttft_ms=1000, tpot_ms=250)), two_choices=True, priors={1: prior})
    paths = {1: SitePath(2.0), 2: SitePath(2.0)}
    light = learn(Rates(), Level0(active_sessions=2, prefill_ms=230.0, token_latency_ms=90.0))
    busy = learn(Rates(), Level0(active_sessions=9, prefill_ms=700.0, token_latency_ms=120.0))
    samples = {1: Level0(active_sessions=2), 2: Level0(active_sessions=2)}

    def loads(rates: dict[int, Rates]) -> dict[int, InstanceLoad | None]:
        return {i.instance_id: i.load for i in decide(intent, samples, set(), paths, (), UNDAMPED, None, rates)}

    got = loads({1: light, 2: light})
    assert got[1] is not None and (got[1].value, got[1].each) == (238_000, 230_000)
    got = loads({1: busy, 2: busy})  # no light-load measure: instance 1's prior; instance 2 has none either
    assert got[1] is not None and (got[1].value, got[1].each) == (49_000, 41_000)
    assert got[2] is not None and (got[2].value, got[2].each) == (708_000, 700_000)


def test_a_two_choices_tier_keeps_a_queueing_instance_a_candidate_and_its_load_says_the_queue() -> None:
    """Hand-worked, two small instances (64 at once, 5 s each, a prompt's prefill 230 ms as they measured it
    lightly loaded), 2 ms away, SLO TTFT 1 s. s1 reports 4 waiting beside 9 running: a new request waits for
    their prefills (4 x 230 ms; no place to wait for), TTFT 2 x 2 x 2 + 920 + 230 = 1,158 ms, past the SLO;
    s2 runs 8, none waiting: 238 ms. On the ring s1 takes no new flow and s2 all of them until the next report.
    With two choices both stay candidates, by headroom ((64 - 13) / 5 s and (64 - 8) / 5 s: weights 91 and 100),
    and the data plane compares their loads: s2 takes the next flows until 238 + n x 230 ms passes 1,158 ms."""
    from dinet.model import InstanceLoad

    light = SMALL
    paths = {1: SitePath(2.0), 2: SitePath(2.0)}
    samples = {
        1: Level0(active_sessions=9, queue_depth=4, token_latency_ms=110.0),
        2: Level0(active_sessions=8, token_latency_ms=110.0),
    }
    ring = _svc(1, 2, slo=Slo(ttft_ms=1000, tpot_ms=250))
    two = replace(ring, two_choices=True)
    rates = {1: light, 2: light}

    def placed(intent: ServiceIntent) -> dict[int, tuple[int, InstanceLoad | None]]:
        out = decide(intent, samples, set(), paths, (), UNDAMPED, None, rates)
        return {i.instance_id: (i.weight, i.load) for i in out}

    assert placed(ring) == {1: (0, None), 2: (100, None)}
    got = placed(two)
    assert {k: w for k, (w, _) in got.items()} == {1: 91, 2: 100}
    loads = {k: ld for k, (_, ld) in got.items()}
    assert loads[1] is not None and (loads[1].value, loads[1].each) == (1_158_000, 230_000)
    assert loads[2] is not None and (loads[2].value, loads[2].each) == (238_000, 230_000)
    assert [loads[2].now(n) < loads[1].now(0) for n in range(5)] == [True, True, True, True, False]


def test_two_choices_leave_out_an_instance_whose_path_alone_misses_the_slo_and_keep_a_queueing_one() -> None:
    """Hand-worked (the cloud-edge run's finding: two choices kept sending to the cloud behind its slowed path).
    s1 and s2 as in the test above (1,158 ms: queueing; 238 ms); a large idle site 500 ms away (256 at once, 5 s
    each): 2 x 2 x 500 + 230 = 2,230 ms with no wait at all, past the 1 s objective whatever the data plane
    places. By headroom alone (256 / 5 s against 51 / 5 s and 56 / 5 s) it would hold most of the ring and
    fill both choices; it is no candidate (weight 0). The queueing s1 stays one (a wait is what the loads
    see): 91 and 100 as before. Were every instance past the objective on its path, all stay candidates."""
    light = SMALL
    rates = {1: light, 2: light, 3: replace(light, capacity=256.0)}
    samples = {
        1: Level0(active_sessions=9, queue_depth=4, token_latency_ms=110.0),
        2: Level0(active_sessions=8, token_latency_ms=110.0),
        3: Level0(),
    }
    two = replace(_svc(1, 2, 3, slo=Slo(ttft_ms=1000, tpot_ms=250)), two_choices=True)
    paths = {1: SitePath(2.0), 2: SitePath(2.0), 3: SitePath(500.0)}
    assert _weights(two, samples, rates, paths) == {1: 91, 2: 100, 3: 0}
    far = {k: SitePath(500.0) for k in paths}  # every one past it: by headroom, as before
    assert _weights(two, samples, rates, far) == {1: 20, 2: 22, 3: 100}


def test_an_idle_instance_is_predicted_from_its_priors_prefill_not_a_bursts_long_prompts() -> None:
    """A burst of another workload's 8,000-token prompts began while the edge ran 1 request, so its light-load
    prefill was measured at 3,000 ms. Busy, a request there is predicted at that (2 x 2 x 2 + 3,000 ms, past the
    1 s SLO: the cloud takes the flows); idle again, from its prior's 40 ms (48 ms: it takes them back), as
    otherwise it would get no flow that measures its prefill again."""
    from dinet.model import InstancePrior

    burst = learn(Rates(), Level0(active_sessions=1, prefill_ms=3000.0, token_latency_ms=30.0))
    prior = InstancePrior(service_s=4.0, capacity=16.0, prefill_ms=40.0, tpot_ms=30.0)
    intent = replace(
        _svc(1, 2, slo=Slo(ttft_ms=1000, tpot_ms=250)),
        priors={1: prior, 2: InstancePrior(service_s=4.0, capacity=16.0, prefill_ms=60.0, tpot_ms=30.0)},
    )
    paths = {1: SitePath(2.0), 2: SitePath(60.0)}
    busy = _weights(intent, {1: Level0(active_sessions=1), 2: Level0(active_sessions=1)}, {1: burst}, paths)
    idle = _weights(intent, {1: Level0(), 2: Level0()}, {1: burst}, paths)
    assert (busy[1], idle[1] > 0, idle[2]) == (0, True, 0)


def test_two_choices_leave_out_an_instance_whose_batch_misses_the_tpot_objective() -> None:
    """Hand-worked, the small instances above (64 at once, 5 s each, prefill 230 ms), all 2 ms away, SLO TTFT
    1 s and TPOT 250 ms. Each runs 8 and none waits: TTFT 2 x 2 x 2 + 230 = 238 ms on all three. s2's batch
    decodes at 300 ms a token (its reports' token latency): a request placed there misses the TPOT objective
    whatever its first token does, and the data plane's loads compare first tokens only, so it is no candidate
    (weight 0); s1 and s3 by headroom ((64 - 8) / 5 s each: 100 and 100). Were every instance past it (all at
    300 ms a token), all stay candidates, by headroom, as on the ring's rule."""
    light = SMALL
    rates = {1: light, 2: light, 3: light}
    paths = {k: SitePath(2.0) for k in rates}
    slow = Level0(active_sessions=8, token_latency_ms=300.0)
    fast = Level0(active_sessions=8, token_latency_ms=110.0)
    two = replace(_svc(1, 2, 3, slo=Slo(ttft_ms=1000, tpot_ms=250)), two_choices=True)
    assert _weights(two, {1: fast, 2: slow, 3: fast}, rates, paths) == {1: 100, 2: 0, 3: 100}
    assert _weights(two, {1: slow, 2: slow, 3: slow}, rates, paths) == {1: 100, 2: 100, 3: 100}
