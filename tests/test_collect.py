"""The metrics collector over real gRPC on loopback: authentication, validation, flooding, expiry."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from dinet.model import ServiceKey
from dinet.policy.scores import Level0
from dinet.services.collect import Agent, Collector, CollectorServer

SVC = ServiceKey.parse("10.99.0.1:80/tcp")


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def rig() -> Iterator[tuple[Collector, CollectorServer, Clock, list]]:
    clock = Clock()
    events: list = []
    c = Collector.with_tokens(
        {"tok-a": ("agent-a", {(SVC, 1)}), "tok-b": ("agent-b", {(SVC, 2)})},
        timeout=3.0,
        max_rate=50,
        listeners=[lambda svc: events.append(("changed", svc))],
        clock=clock,
    )
    with CollectorServer(c, insecure=True) as srv:
        yield c, srv, clock, events


def test_valid_reports_are_accepted_and_forwarded(rig) -> None:
    c, srv, _, events = rig
    a = Agent(srv.address, "tok-a")
    ack = a.send([a.report(str(SVC), 1, Level0(cpu_load=0.1 * i)) for i in range(5)])
    assert (ack.accepted, ack.rejected) == (5, 0)
    assert events == [("changed", SVC)] * 5 and c.latest[(SVC, 1)].metrics.cpu_load == 0.4
    a.close()


def test_unauthenticated_agents_are_refused(rig) -> None:
    c, srv, _, events = rig
    a = Agent(srv.address, "wrong")
    with pytest.raises(grpc.RpcError) as e:
        a.send([a.report(str(SVC), 1, Level0())])
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert c.rejected["token"] == 1 and events == []
    a.close()


@pytest.mark.parametrize(
    "bad,reason",
    [
        (dict(cpu_load=float("nan")), "invalid: cpu_load is not a number"),
        (dict(gpu_util=-0.5), "invalid: gpu_util is negative"),
        (dict(cpu_load=3.0), "invalid: cpu_load is a fraction"),
        (dict(token_latency_ms=float("inf")), "invalid: token_latency_ms is not a number"),
        (dict(instance_id=7), "unknown_instance: agent agent-a does not report for"),
        (dict(service="not a service"), "unknown_instance: a service is VIP:PORT/PROTO"),
    ],
)
def test_bad_reports_are_refused_with_a_reason(rig, bad: dict, reason: str) -> None:
    c, srv, _, events = rig
    a = Agent(srv.address, "tok-a")
    r = a.report(str(SVC), 1, Level0())
    for k, v in bad.items():
        setattr(r, k, v)
    ack = a.send([r, a.report(str(SVC), 1, Level0(cpu_load=0.2))])
    assert (ack.accepted, ack.rejected) == (1, 1)
    assert c.rejected[reason.split(":")[0]] == 1
    assert (
        events == [("changed", SVC)] and c.sample((SVC, 1)).cpu_load == 0.2
    )  # the good report after the bad one still counts
    a.close()
    assert reason in ack.last_error or ack.last_error.startswith(reason.split(":")[0])


def test_flooding_and_replays_are_refused(rig) -> None:
    c, srv, clock, _ = rig
    a = Agent(srv.address, "tok-a")
    ack = a.send([a.report(str(SVC), 1, Level0()) for _ in range(80)])
    assert (ack.accepted, ack.rejected) == (50, 30) and c.rejected["rate"] == 30
    clock.t += 1.5  # a new second
    old = a.report(str(SVC), 1, Level0())
    old.seq = 3
    ack = a.send([old])
    assert ack.rejected == 1 and "seq 3" in ack.last_error
    a.close()


def test_a_restarted_agent_is_heard_again(rig) -> None:
    """An agent that restarts (a new process, its counter anew) is not taken for a replay of itself."""
    c, srv, clock, _ = rig
    first = Agent(srv.address, "tok-a")
    assert first.send([first.report(str(SVC), 1, Level0()) for _ in range(20)]).accepted == 20
    first.close()
    clock.t += 1.5
    again = Agent(srv.address, "tok-a")
    ack = again.send([again.report(str(SVC), 1, Level0(cpu_load=0.5))])
    assert ack.accepted == 1, ack.last_error
    again.close()


def test_silent_agents_expire_once(rig) -> None:
    c, srv, clock, events = rig
    a, b = Agent(srv.address, "tok-a"), Agent(srv.address, "tok-b")
    a.send([a.report(str(SVC), 1, Level0())])
    b.send([b.report(str(SVC), 2, Level0())])
    clock.t += 2.0
    a.send([a.report(str(SVC), 1, Level0())])
    clock.t += 2.0
    assert c.expire() == [(SVC, 2)] and c.expire() == []
    assert (
        c.expired(SVC) == {2} and c.samples(SVC).keys() == {1} and c.is_expired((SVC, 2)) and not c.is_expired((SVC, 1))
    )
    b.send([b.report(str(SVC), 2, Level0())])
    assert not c.is_expired((SVC, 2))
    a.close()
    b.close()


def test_batched_reports_are_checked_one_by_one(rig) -> None:
    c, srv, _, events = rig
    a = Agent(srv.address, "tok-a")
    good = [a.report(str(SVC), 1, Level0(cpu_load=0.1)) for _ in range(3)]
    bad = a.report(str(SVC), 1, Level0())
    bad.gpu_util = 2.0
    ack = a.send_batches([good[:2], [bad, good[2]]])
    assert (ack.accepted, ack.rejected) == (3, 1) and "gpu_util is a fraction" in ack.last_error
    assert len(events) == 3
    a.close()


def test_a_pool_agent_announces_instances_of_its_range_at_its_sites_only() -> None:
    from dinet.services.collect import AgentAuth, Announce, Pool

    joined: list = []
    pool = Pool(SVC, 100, 109, frozenset({3}))
    c = Collector({"cloud-pool": AgentAuth(frozenset(), "tok-pool", (pool,))}, timeout=3.0)
    c.listeners.append(lambda svc: joined.append(c.pool(svc)))
    with CollectorServer(c, insecure=True) as srv:
        agent = Agent(srv.address, "tok-pool")
        try:
            ok = agent.send([agent.report(str(SVC), 101, Level0(), Announce("10.103.1.2", 3))])
            assert ok.accepted == 1
            outside = agent.send([agent.report(str(SVC), 110, Level0(), Announce("10.103.1.2", 3))])
            assert outside.rejected == 1 and "does not report for" in outside.last_error
            wrong_site = agent.send([agent.report(str(SVC), 102, Level0(), Announce("10.103.1.2", 1))])
            assert wrong_site.rejected == 1 and "site 1 is not the pool's" in wrong_site.last_error
            garbage = agent.send([agent.report(str(SVC), 103, Level0(), Announce("not-an-address", 3))])
            assert garbage.rejected == 1 and "endpoint 'not-an-address'" in garbage.last_error
            leave = agent.send([agent.report(str(SVC), 101, Level0(), Announce("10.103.1.2", 3, leaving=True))])
            assert leave.accepted == 1
        finally:
            agent.close()
    assert joined == [{101: Announce("10.103.1.2", 3)}, {101: Announce("10.103.1.2", 3, True)}]


@pytest.mark.parametrize(
    "endpoint,why",
    [
        ("0.0.0.0", "not a unicast address"),
        ("127.0.0.1", "not a unicast address"),
        ("255.255.255.255", "not a unicast address"),
        ("224.0.0.1", "not a unicast address"),
        ("10.99.0.1", "the service's own VIP"),
        ("10.200.0.7", "outside the pool's prefixes"),
    ],
    ids=["unspecified", "loopback", "broadcast", "multicast", "the-vip", "outside-prefixes"],
)
def test_a_pool_agent_cannot_announce_an_endpoint_that_is_no_instance(endpoint: str, why: str) -> None:
    import ipaddress

    from dinet.services.collect import AgentAuth, Announce, Pool

    pool = Pool(SVC, 100, 109, frozenset({3}), (ipaddress.ip_network("10.103.0.0/16"),))
    c = Collector({"cloud-pool": AgentAuth(frozenset(), "tok-pool", (pool,))}, timeout=3.0)
    with CollectorServer(c, insecure=True) as srv:
        agent = Agent(srv.address, "tok-pool")
        try:
            ack = agent.send([agent.report(str(SVC), 101, Level0(), Announce(endpoint, 3))])
            assert ack.rejected == 1 and why in ack.last_error
            assert c.pool(SVC) == {}
        finally:
            agent.close()


def test_a_pool_instance_keeps_its_endpoint_until_it_has_left() -> None:
    """Re-announcing an id at another address would move its established flows there: refused while it is a
    member; once it went silent (pruned), the id may join at the new address."""
    from dinet.services.collect import AgentAuth, Announce, Pool

    clock = Clock()
    pool = Pool(SVC, 100, 109, frozenset({3}))
    c = Collector({"cloud-pool": AgentAuth(frozenset(), "tok-pool", (pool,))}, timeout=3.0, clock=clock)
    with CollectorServer(c, insecure=True) as srv:
        agent = Agent(srv.address, "tok-pool")
        try:
            assert agent.send([agent.report(str(SVC), 101, Level0(), Announce("10.103.1.2", 3))]).accepted == 1
            moved = agent.send([agent.report(str(SVC), 101, Level0(), Announce("10.103.9.9", 3))])
            assert moved.rejected == 1 and "is at 10.103.1.2, not 10.103.9.9" in moved.last_error
            clock.t += 4.0
            assert c.expire() == [(SVC, 101)] and c.pool(SVC) == {}  # silent: pruned
            again = agent.send([agent.report(str(SVC), 101, Level0(), Announce("10.103.9.9", 3))])
            assert again.accepted == 1 and c.pool(SVC) == {101: Announce("10.103.9.9", 3)}
        finally:
            agent.close()


def test_one_identity_cannot_take_every_worker_of_the_collector() -> None:
    """An authenticated agent that opens endless report streams gets `max_streams` of them; the next is
    refused (RESOURCE_EXHAUSTED, counted), and another agent's reports are still taken at once."""
    import threading

    c = Collector.with_tokens({"tok-a": ("agent-a", {(SVC, 1)}), "tok-b": ("agent-b", {(SVC, 2)})}, max_streams=2)
    release = threading.Event()
    with CollectorServer(c, insecure=True) as srv:
        hog, fair = Agent(srv.address, "tok-a"), Agent(srv.address, "tok-b")
        hogs = [Agent(srv.address, "tok-a") for _ in range(2)]  # a session each, so both reports count

        def endless(a: Agent):  # one report, then a stream that never ends until released
            yield a.report(str(SVC), 1, Level0())
            release.wait(30)

        try:
            held = [a.stub.Stream.future(endless(a), metadata=a._md(), timeout=30) for a in hogs]
            deadline = time.monotonic() + 10
            while c.accepted < 2:  # both streams are open and took their first report
                assert time.monotonic() < deadline
                time.sleep(0.01)
            with pytest.raises(grpc.RpcError) as e:
                hog.send([hog.report(str(SVC), 1, Level0())])
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and c.rejected["streams"] == 1
            assert fair.send([fair.report(str(SVC), 2, Level0())], timeout=5).accepted == 1
        finally:
            release.set()
            for f in held:
                f.result(timeout=10)
            for a in (hog, fair, *hogs):
                a.close()
    assert c.rejected["streams"] == 1 and c.accepted == 3


def test_an_instance_never_heard_from_expires_only_after_the_reconnect_grace(rig) -> None:
    from dinet.services.collect import FIRST_REPORT_GRACE_S

    c, _, clock, _ = rig  # nobody has reported since the start
    clock.t += c.timeout + FIRST_REPORT_GRACE_S / 2
    assert c.expire() == []  # an agent may still be reconnecting to a collector that just started
    clock.t += FIRST_REPORT_GRACE_S
    assert sorted(c.expire()) == [(SVC, 1), (SVC, 2)]


def test_a_restarted_collector_hears_every_agent_again_before_any_instance_expires() -> None:
    """The collector (a controller) is away for 7 s and comes back on its port: the agent, reporting all the
    while, is heard again before the restarted collector would expire its instance (its channel's
    reconnect backoff is capped; the first report has a grace), so no instance goes and no flow moves."""
    import threading

    from dinet.netutil import free_port

    port = free_port()
    tokens = {"tok-a": ("agent-a", {(SVC, 1)})}
    first = Collector.with_tokens(tokens, timeout=1.5)
    agent = Agent(f"127.0.0.1:{port}", "tok-a")
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(0.1):
            try:
                agent.send([agent.report(str(SVC), 1, Level0())], timeout=1)
            except grpc.RpcError:
                pass  # the collector is away: the agent goes on

    th = threading.Thread(target=report, daemon=True)
    with CollectorServer(first, f"127.0.0.1:{port}", insecure=True):
        th.start()
        deadline = time.monotonic() + 10
        while first.accepted == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.accepted > 0
    time.sleep(7.0)  # the fault: no collector for 7 s (an uncapped backoff would wait 4 s more by then)
    second = Collector.with_tokens(tokens, timeout=1.5)
    expired = []
    try:
        with CollectorServer(second, f"127.0.0.1:{port}", insecure=True):
            deadline = time.monotonic() + 10
            while second.accepted == 0 and time.monotonic() < deadline:
                expired += second.expire()
                time.sleep(0.05)
            expired += second.expire()
    finally:
        stop.set()
        th.join(timeout=5)
        agent.close()
    assert second.accepted > 0 and expired == []
