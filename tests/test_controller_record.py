"""The controller plans from its own record, against a target that counts every read and write (no kernel):
no read of the data plane per report; a restart adopts what is installed and writes nothing; an instance
never heard from is neither idle nor healthy and expires within the timeout of the start; the operator's
`down` and `draining` win over reports; a new intent is applied without a restart."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address

import pytest

from dinet.model import Instance, InstanceState, ServiceIntent, ServiceKey, SitePath, TrafficClass
from dinet.policy.decide import Policy
from dinet.policy.scores import Level0
from dinet.services.collect import Collector
from dinet.services.controller import Controller
from dinet.targets.base import ServiceState

SVC = ServiceKey.parse("10.99.0.1:80/tcp")
A, B, C = (Instance(i, f"192.0.2.{i}", 1, site_id=i) for i in (1, 2, 3))
SITES = {1: SitePath(2), 2: SitePath(20), 3: SitePath(20)}


class CountingTarget:
    """A SteeringTarget holding one plane in memory; counts reads and writes."""

    def __init__(self) -> None:
        self.plane: dict[ServiceKey, dict[int, Instance]] = {}
        self.session: dict[ServiceKey, bool] = {}
        self.two_choices: dict[ServiceKey, bool] = {}
        self.reads = self.writes = 0

    def add_service(self, svc: ServiceKey, session: bool = False, two_choices: bool = False) -> int:
        self.plane.setdefault(svc, {})
        self.session[svc] = session
        self.two_choices[svc] = two_choices
        return 0

    def remove_service(self, svc: ServiceKey) -> None:
        del self.plane[svc]
        self.writes += 1

    def services(self) -> list[ServiceState]:
        return [self.service(k) for k in self.plane]

    def service(self, svc: ServiceKey) -> ServiceState:
        self.reads += 1
        return ServiceState(
            svc, 0, 0, dict(self.plane[svc]), self.session.get(svc, False), self.two_choices.get(svc, False)
        )

    def set_instances(self, svc: ServiceKey, instances: list[Instance]) -> None:
        self.plane[svc] = {slot: i for slot, i in enumerate(instances)}
        self.writes += 1

    def installed(self, svc: ServiceKey = SVC) -> dict[int, tuple[int, str]]:
        return {i.instance_id: (i.weight, i.state.name.lower()) for i in self.plane[svc].values()}


def controller(target: CountingTarget, *insts: Instance) -> Controller:
    intent = [ServiceIntent(SVC, TrafficClass.DELAY_TOLERANT, insts or (A, B))]
    return Controller(target, intent, dict(SITES), policy=Policy(smoothing=1.0))


def test_a_session_affine_service_is_installed_so_and_a_changed_placement_reaches_the_plane() -> None:
    """The intent's placement reaches the data plane at start and when the intent changes it (the service
    keeps its instances: only how new flows are placed changes)."""
    import dataclasses

    t = CountingTarget()
    intent = ServiceIntent(SVC, TrafficClass.DELAY_TOLERANT, (A, B), session=True)
    ctl = Controller(t, [intent], dict(SITES), policy=Policy(smoothing=1.0))
    ctl.start()
    assert t.session[SVC] is True and set(t.installed()) == {A.instance_id, B.instance_id}
    ctl.set_intent([dataclasses.replace(intent, session=False)])
    assert t.session[SVC] is False and set(t.installed()) == {A.instance_id, B.instance_id}
    ctl.set_intent([intent])
    assert t.session[SVC] is True
    ctl.set_intent([dataclasses.replace(intent, session=False, two_choices=True)])
    assert (t.session[SVC], t.two_choices[SVC]) == (False, True)


def test_a_two_choices_service_gets_each_reports_load_written_and_no_more() -> None:
    """Each report of an instance of a two-choices service writes its load under a new seq (the data plane's
    counts restart); deciding again without a new report writes nothing."""
    t = CountingTarget()
    intent = ServiceIntent(SVC, TrafficClass.DELAY_SENSITIVE, (A, B), two_choices=True)
    ctl = Controller(t, [intent], dict(SITES), policy=Policy(smoothing=1.0))
    ctl.start()
    assert t.two_choices[SVC] is True
    seqs = []
    for running in (1, 3, 3):
        ctl.collector.observe((SVC, A.instance_id), Level0(active_sessions=running))
        ctl.collector.observe((SVC, B.instance_id), Level0())
        loads = {i.instance_id: i.load for i in t.plane[SVC].values()}
        assert all(ld is not None for ld in loads.values())
        seqs.append(loads[A.instance_id].seq)  # type: ignore[union-attr]
    assert seqs[0] < seqs[1] < seqs[2]  # every report a new one, even one that says the same
    writes = t.writes
    ctl.reconcile(SVC)
    assert t.writes == writes


def test_reports_are_decided_from_the_record_without_reading_the_plane() -> None:
    t = CountingTarget()
    ctl = controller(t)
    ctl.start()
    reads = t.reads
    for k in range(200):
        ctl.collector.observe((SVC, 1 + k % 2), Level0(cpu_load=0.2 + 0.6 * (k % 3 == 0)))
    assert t.reads == reads  # decisions read nothing back
    assert t.writes == ctl.writes and ctl.installed[SVC] == tuple(
        sorted(t.plane[SVC].values(), key=lambda i: i.instance_id)
    )


def test_a_restarted_controller_adopts_what_is_installed_and_writes_nothing() -> None:
    t = CountingTarget()
    first = controller(t)
    first.start()
    first.collector.observe((SVC, 1), Level0(cpu_load=0.1))
    first.collector.observe((SVC, 2), Level0(cpu_load=0.8))
    first.collector.expire_now((SVC, 2))
    before, writes = t.installed(), t.writes
    assert before[2] == (0, "draining")  # expired: no new flow (its open ones stay)
    second = controller(t)
    assert second.start() == 0 and t.writes == writes and t.installed() == before
    # the silent instance stays out until it reports: a restart does not bring it back
    second.collector.observe((SVC, 1), Level0(cpu_load=0.1))
    assert t.installed()[2] == (0, "draining")


def test_an_instance_never_heard_from_is_not_idle_and_healthy() -> None:
    t = CountingTarget()
    ctl = controller(t)
    ctl.start()
    ctl.collector.observe((SVC, 1), Level0(cpu_load=0.7))  # 1 is busy; 2 has said nothing
    w = t.installed()
    assert w[2] == (1, "up")  # as the intent installed it, not the top weight of an "idle" instance
    assert w[1][0] > w[2][0]


def test_an_instance_that_never_reports_expires_within_the_timeout_of_the_start() -> None:
    """Within the timeout plus the grace an agent needs to reconnect to a collector that just started."""
    from dinet.services.collect import FIRST_REPORT_GRACE_S

    clock = [100.0]
    col = Collector.with_tokens({"ta": ("a", {(SVC, 1)}), "tb": ("b", {(SVC, 2)})}, timeout=3, clock=lambda: clock[0])
    t = CountingTarget()
    ctl = controller(t)
    ctl.start()
    ctl.attach(col)
    clock[0] += 3 + FIRST_REPORT_GRACE_S / 2
    assert col.expire() == []
    clock[0] += FIRST_REPORT_GRACE_S
    assert sorted(col.expire()) == [(SVC, 1), (SVC, 2)]
    assert t.installed() == {1: (0, "draining"), 2: (0, "draining")}
    assert col.expire() == []  # once


def test_the_operators_down_and_draining_win_over_reports_until_the_intent_changes() -> None:
    t = CountingTarget()
    ctl = controller(t, A, replace(B, state=InstanceState.DOWN), replace(C, state=InstanceState.DRAINING))
    ctl.start()
    for iid in (1, 2, 3):
        ctl.collector.observe((SVC, iid), Level0(cpu_load=0.1))
    assert t.installed()[2][1] == "down" and t.installed()[3][1] == "draining" and t.installed()[1][1] == "up"
    ctl.set_intent([ServiceIntent(SVC, TrafficClass.DELAY_TOLERANT, (A, B, C))])  # the operator lifts both
    ctl.collector.observe((SVC, 2), Level0(cpu_load=0.1))
    assert {iid: s for iid, (_, s) in t.installed().items()} == {1: "up", 2: "up", 3: "up"}


def test_a_new_intent_adds_and_removes_without_a_restart() -> None:
    t = CountingTarget()
    ctl = controller(t)
    ctl.start()
    other = ServiceKey.parse("10.99.0.2:443/tcp")
    n = ctl.set_intent(
        [
            ServiceIntent(SVC, TrafficClass.DELAY_TOLERANT, (A,)),
            ServiceIntent(other, TrafficClass.DELAY_SENSITIVE, (B,)),
        ]
    )
    assert n == 2 and t.installed() == {1: (1, "up")} and t.installed(other) == {2: (1, "up")}
    ctl.set_intent([ServiceIntent(other, TrafficClass.DELAY_SENSITIVE, (B,))])
    assert SVC not in t.plane and SVC not in ctl.installed


def test_a_service_never_takes_a_path_below_its_security_level() -> None:
    # site 1 is the nearest but the public internet (0); sites 2 and 3 a VPN (2) and a dedicated line (3)
    t = CountingTarget()
    sites = {1: SitePath(2, security=0), 2: SitePath(20, security=2), 3: SitePath(30, security=3)}
    sensitive = ServiceIntent(SVC, TrafficClass.DELAY_SENSITIVE, (A, B, C), min_security=2)
    ctl = Controller(t, [sensitive], sites, policy=Policy(smoothing=1.0))
    ctl.start()
    for i in (1, 2, 3):
        ctl.collector.observe((SVC, i), Level0(cpu_load=0.1))
    have = t.installed()
    assert have[1] == (0, "down")  # the nearest, idle, but below the service's level
    assert have[2][0] > 0 and have[3] == (0, "up")  # the nearest path at or above the level
    ctl.collector.observe((SVC, 2), Level0(cpu_load=1.0))  # the VPN's instance overloaded: on to the dedicated line
    have = t.installed()
    assert have[1][0] == 0 and have[3][0] > 0
    ctl.collector.observe((SVC, 3), Level0(cpu_load=1.0))  # everything allowed overloaded: still never the internet
    assert t.installed()[1][0] == 0


def test_a_probed_site_keeps_its_security_level() -> None:
    """A probe measures a path's delay and loss; its security level stays the intent's (a confidential service
    keeps the measured dedicated line)."""
    import threading

    from dinet.services.run import _probe_loop

    t = CountingTarget()
    sites = {1: SitePath(2, security=3), 2: SitePath(20, security=0)}
    svc = ServiceIntent(SVC, TrafficClass.DELAY_SENSITIVE, (A, B), min_security=2)
    ctl = Controller(t, [svc], sites, policy=Policy(smoothing=1.0))
    ctl.start()
    for i in (1, 2):
        ctl.collector.observe((SVC, i), Level0(cpu_load=0.1))
    stop = threading.Event()

    class OneProbe:
        def measure(self) -> SitePath:
            stop.set()  # one round of the loop
            return SitePath(delay_ms=5.0, loss=0.0)

    _probe_loop(ctl, {1: OneProbe()}, 0.01, stop)
    assert ctl.sites[1] == SitePath(5.0, 0.0, security=3)
    assert t.installed()[1][0] > 0 and t.installed()[2][0] == 0


def test_a_service_that_moves_a_kv_cache_first_counts_the_paths_rate() -> None:
    """Two decode sites at the same delay, one behind a slower link: a service whose requests hand over 8 MiB
    first goes to the fast one (the transfer's time counts as delay, even where both paths' Level 1
    communication saturates); a service that moves nothing sees them as equal."""
    sites = {1: SitePath(5, bw_mbit=1000), 2: SitePath(5, bw_mbit=100)}
    placed = {}
    for kb in (8192.0, 0.0):
        t = CountingTarget()
        svc = ServiceIntent(SVC, TrafficClass.DELAY_SENSITIVE, (A, B), transfer_kb=kb)
        ctl = Controller(t, [svc], dict(sites), policy=Policy(smoothing=1.0))
        ctl.start()
        for i in (1, 2):
            ctl.collector.observe((SVC, i), Level0(cpu_load=0.1))
        placed[kb] = {i: w for i, (w, _) in t.installed().items()}
    assert placed[8192.0][1] > 0 and placed[8192.0][2] == 0
    assert placed[0.0][1] > 0 and placed[0.0][2] > 0


def test_the_preferred_model_tier_takes_flows_until_it_saturates_and_again_after() -> None:
    # the large tier is far (site 3), the small tiers near: the tier order wins over the distance
    t = CountingTarget()
    svc = ServiceIntent(
        SVC,
        TrafficClass.DELAY_SENSITIVE,
        (A, B, C),
        tier_order=("large", "small"),
        tiers={1: "small", 2: "small", 3: "large"},
    )
    ctl = Controller(t, [svc], dict(SITES), policy=Policy(smoothing=1.0))
    ctl.start()
    for i in (1, 2, 3):
        ctl.collector.observe((SVC, i), Level0(cpu_load=0.2))
    assert [w for w, _ in t.installed().values()] == [0, 0, t.installed()[3][0]] and t.installed()[3][0] > 0
    ctl.collector.observe((SVC, 3), Level0(cpu_load=0.95))  # the large tier saturates: degrade to the nearest small one
    have = t.installed()
    assert have[3][0] == 0 and have[1][0] > 0
    ctl.collector.observe((SVC, 3), Level0(cpu_load=0.3))  # it recovers: back to the large tier
    have = t.installed()
    assert have[3][0] > 0 and have[1][0] == 0 and have[2][0] == 0


def test_a_pool_instance_joins_without_a_restart_drains_when_leaving_and_goes_when_silent() -> None:
    from dinet.services.collect import Announce

    t = CountingTarget()
    ctl = controller(t)
    ctl.start()
    for i in (1, 2):
        ctl.collector.observe((SVC, i), Level0(cpu_load=0.5))
    ctl.collector.observe(
        (SVC, 100), Level0(cpu_load=0.0), Announce("192.0.2.100", 3)
    )  # idle: it takes the largest share of new flows
    have = t.installed()
    assert set(have) == {1, 2, 100} and have[100][0] > have[1][0] > 0
    assert {i.endpoint for i in t.plane[SVC].values()} >= {ip_address("192.0.2.100")}
    ctl.set_intent([ServiceIntent(SVC, TrafficClass.DELAY_TOLERANT, (A, B))])  # the file re-read: it stays
    assert 100 in t.installed()
    ctl.collector.observe((SVC, 100), Level0(cpu_load=0.0), Announce("192.0.2.100", 3, leaving=True))
    assert t.installed()[100][1] == "draining"  # no new flow; its established ones stay
    ctl.collector.expire_now((SVC, 100))
    assert set(t.installed()) == {1, 2} and ctl.collector.pool(SVC) == {}  # pruned where it is known


def test_a_service_under_a_baseline_is_placed_by_it_undamped() -> None:
    from dinet.policy.decide import Strategy

    t = CountingTarget()
    svc = ServiceIntent(SVC, TrafficClass.DELAY_SENSITIVE, (A, B, C), strategy=Strategy.ANYCAST)
    ctl = Controller(t, [svc], dict(SITES))  # the default policy damps: a baseline is not
    ctl.start()
    for i in (1, 2, 3):
        ctl.collector.observe((SVC, i), Level0(cpu_load=0.95 if i == 1 else 0.0))
    assert t.installed() == {1: (100, "up"), 2: (0, "up"), 3: (0, "up")}  # site 1 is nearest, overloaded or not


class FlakyTarget(CountingTarget):
    """A data plane that refuses every write while `away` (a switch restarting, a node agent unreachable)."""

    def __init__(self) -> None:
        super().__init__()
        self.away = False
        self.tried = 0

    def set_instances(self, svc: ServiceKey, instances: list[Instance]) -> None:
        self.tried += 1
        if self.away:
            from dinet.errors import DataPlaneError

            raise DataPlaneError("the switch does not answer")
        super().set_instances(svc, instances)


def test_a_failing_data_plane_is_counted_retried_and_resynced_and_stops_no_other_node() -> None:
    """Two ingress nodes decide on one collector's reports. One node's data plane goes away: its failure is
    counted, it is not written to again until its backoff has passed, and the other node is decided for on
    every report; once it answers, a resync writes what was decided meanwhile."""
    col = Collector({})
    flaky, fine = FlakyTarget(), CountingTarget()
    intent = [ServiceIntent(SVC, TrafficClass.DELAY_TOLERANT, (A, B))]
    down, up = (Controller(t, intent, dict(SITES), policy=Policy(smoothing=1.0), collector=col) for t in (flaky, fine))
    down.start()
    up.start()
    flaky.away = True
    col.observe((SVC, 2), Level0(cpu_load=0.1))  # 2 idle: both nodes should give it the top weight
    assert down.failing and down.errors == 1 and col.rejected["decision"] == 1
    assert fine.installed()[2][0] == 100  # the other node decided all the same
    tried = flaky.tried
    col.observe((SVC, 1), Level0(cpu_load=0.95))  # 1 overloaded
    assert flaky.tried == tried  # no write is tried while it is failing
    assert fine.installed()[1][0] == 0
    assert not down.retry(now=0.0)  # the backoff has not passed
    assert not down.retry(now=1e12) and down.errors == 2  # still away: counted again, backoff longer
    flaky.away = False
    assert down.retry(now=2e12) and not down.failing
    assert flaky.installed() == fine.installed()  # what was decided meanwhile is in place


@pytest.mark.timeout(60)  # a report kept waiting would hang here: the timeout fails it
def test_a_report_is_taken_at_once_while_a_long_write_holds_the_controller() -> None:
    """While a write holds the controller (a restarted switch written back takes seconds), a report is taken
    at once, stamped when it came (so its instance does not expire for a silence that was the controller's),
    and decided by the writer when it lets go."""
    import threading

    class SlowTarget(CountingTarget):
        def __init__(self) -> None:
            super().__init__()
            self.writing, self.go = threading.Event(), threading.Event()
            self.hold = False

        def set_instances(self, svc: ServiceKey, instances: list[Instance]) -> None:
            if self.hold:
                self.hold = False
                self.writing.set()
                self.go.wait()
            super().set_instances(svc, instances)

    clock = [0.0]
    col = Collector({}, timeout=1.5, clock=lambda: clock[0])
    t = SlowTarget()
    ctl = Controller(t, [ServiceIntent(SVC, TrafficClass.DELAY_TOLERANT, (A, B))], dict(SITES),
                     policy=Policy(smoothing=1.0), collector=col)  # fmt: skip
    ctl.start()
    t.hold = True
    writer = threading.Thread(target=col.observe, args=((SVC, 1), Level0(cpu_load=0.1)))
    writer.start()
    t.writing.wait()  # the first report's decision is writing, the controller held
    clock[0] = 1.0
    col.observe((SVC, 2), Level0(cpu_load=0.95))  # returns at once: the writer decides it
    assert col.sample((SVC, 2)) is not None and col.latest[(SVC, 2)].at == 1.0  # stamped when it came
    clock[0] = 2.4
    assert col.expire() == [(SVC, 1)]  # silent for 2.4 s; 2 spoke 1.4 s ago, while the write went on
    t.go.set()
    writer.join()
    # both decided after all, by the writer when it let go: 1 draining, 2 (overloaded) keeps the trickle
    assert t.installed() == {1: (0, "draining"), 2: (1, "up")}


def test_the_metrics_endpoint_answers_while_the_data_plane_is_away() -> None:
    """A scrape while the switch restarts: the weights as decided, no counter (the switch's, unknown), and the
    node marked failing; the counters come back with the switch."""
    from prometheus_client import generate_latest

    from dinet.errors import DataPlaneError
    from dinet.services.observe import registry
    from dinet.targets.base import Counter

    class AwayCounters(FlakyTarget):
        def service_counters(self, svc: ServiceKey) -> tuple[Counter, dict[int, Counter]]:
            if self.away:
                raise DataPlaneError("switch in1: Read failed: UNAVAILABLE")
            return Counter(packets=7), {1: Counter(packets=5), 2: Counter(packets=2)}

    col = Collector({})
    t = AwayCounters()
    ctl = Controller(t, [ServiceIntent(SVC, TrafficClass.DELAY_TOLERANT, (A, B))], dict(SITES), collector=col)
    ctl.start()
    t.away = True
    col.observe((SVC, 1), Level0(cpu_load=0.1))  # the write fails: the node is failing
    text = generate_latest(registry(ctl, col)).decode()
    assert f'dinet_instance_weight{{instance="1",node="0",service="{SVC}"}}' in text
    assert 'dinet_controller_failing{node="0"} 1.0' in text
    assert "dinet_instance_packets_total{" not in text
    t.away = False
    text = generate_latest(registry(ctl, col)).decode()
    assert f'dinet_instance_packets_total{{instance="1",node="0",service="{SVC}"}} 5.0' in text


def test_a_restarted_controller_keeps_a_joined_pool_instance_and_a_silent_one_out() -> None:
    """A pool instance joined and another instance died; then the controller (and its collector) restart. The
    new one adopts both as the data plane holds them and writes nothing; the pool instance stays until it
    is silent for the collector's timeout (then it is removed), or reports and goes on."""
    from dinet.services.collect import AgentAuth, Announce, Pool

    clock = [100.0]
    agents = {
        "a": AgentAuth(frozenset({(SVC, 1), (SVC, 2)})),
        "pool": AgentAuth(frozenset(), "", (Pool(SVC, 100, 109, frozenset({3})),)),
    }
    t = CountingTarget()
    first = Controller(
        t,
        [ServiceIntent(SVC, TrafficClass.DELAY_TOLERANT, (A, B))],
        dict(SITES),
        collector=Collector(agents, clock=lambda: clock[0]),
    )
    first.start()
    first.collector.observe((SVC, 1), Level0(cpu_load=0.3))
    first.collector.observe((SVC, 100), Level0(cpu_load=0.1), Announce("192.0.2.100", 3))
    first.collector.expire_now((SVC, 2))
    before, writes = t.installed(), t.writes
    assert before[100][1] == "up" and before[2] == (0, "draining")
    again = Collector(agents, timeout=3.0, clock=lambda: clock[0])
    second = Controller(t, [ServiceIntent(SVC, TrafficClass.DELAY_TOLERANT, (A, B))], dict(SITES), collector=again)
    assert second.start() == 0 and t.writes == writes and t.installed() == before
    again.observe((SVC, 1), Level0(cpu_load=0.3))
    assert t.installed()[100] == before[100] and t.installed()[2] == (0, "draining")  # not dropped, not revived
    clock[0] += 6.0  # past the timeout and the reconnect grace
    assert (SVC, 100) in again.expire()
    assert 100 not in t.installed()  # silent past the timeout: it has left
