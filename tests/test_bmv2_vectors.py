"""The shared steering vectors on BMv2 (simple_switch_grpc programmed over P4Runtime): the same table of
input and expected packets as the XDP program runs, the same answers required."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from scapy.layers.l2 import ARP, Ether

from conftest import bmv2_tools_or_skip, needs_root
from tests.vectors import Drop, Forward, Pass, Vector
from tests.vectors import steering as sv

pytestmark = [needs_root]
PROBE = bytes(Ether(src="02:99:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="192.0.2.250"))


@pytest.fixture(scope="module")
def rig(request: pytest.FixtureRequest) -> Iterator:
    bmv2_tools_or_skip()
    from conftest import NS_PREFIX
    from tests.bmv2_harness import bmv2_rig

    with bmv2_rig(f"{NS_PREFIX}v") as r:
        sv.install_scenario(r.node)
        yield r


def run_vector(rig, v: Vector) -> None:
    """Inject at port 0; then a probe that the switch passes to port 1. Ingress handles packets in order, so
    once the probe is out the vector has been decided: its counters can be read and its frames drained."""
    before = rig.node.verdicts()
    rig.inject(v.port, bytes(v.packet))
    if isinstance(v.expect, Forward):
        got = rig.read(v.expect.port, timeout=5)
        assert got is not None, f"{v.name}: nothing left port {v.expect.port}"
        assert got == bytes(v.expect.packet), f"{v.name}:\n got  {Ether(got)!r}\n want {v.expect.packet!r}"
    rig.inject(0, PROBE)
    seen = []
    while (f := rig.read(1, timeout=5)) is not None:
        if f == PROBE:
            break
        seen.append(f)
    else:
        raise AssertionError(f"{v.name}: the probe never came out of port 1")
    extra = rig.drain()
    after = rig.node.verdicts()
    changed = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    changed.pop("pass_not_service", None)  # the probe's own count
    if isinstance(v.expect, Pass):
        assert seen == [bytes(v.packet)], f"{v.name}: passed frames {[Ether(f) for f in seen]!r}"
        if v.expect.reason != "pass_not_service":
            assert changed == {v.expect.reason: 1}, f"{v.name}: counters {changed}"
    else:
        assert seen == [], f"{v.name}: unexpected frames on port 1: {[Ether(f) for f in seen]!r}"
        if isinstance(v.expect, Drop):
            assert changed == {v.expect.reason: 1}, f"{v.name}: counters {changed}"
        else:
            assert changed == {}, f"{v.name}: counters {changed}"
    assert extra == {}, f"{v.name}: unexpected frames {extra}"


NAMES = sv.names()
RAN: dict[int, set[str]] = {}  # per switch (this module's rig), the vectors it has run


@pytest.mark.parametrize("name", NAMES)
def test_steering_vector_on_bmv2(rig, name: str) -> None:
    run_vector(rig, sv.named(sv.placement(rig.node), name))
    ran = RAN.setdefault(id(rig), set())
    ran.add(name)
    if ran == set(NAMES):  # once the switch has run the whole table:
        # sessions placed and flows that found their session's instance (two ports of one group; a label, a
        # label with a session port, a session port alone: three sessions)
        chat4, chat6 = rig.node.service_counters(sv.CHAT4)[0], rig.node.service_counters(sv.CHAT6)[0]
        assert (chat4.sessions, chat4.session_flows, chat6.sessions, chat6.session_flows) == (1, 1, 3, 0)


def endpoint_of(rig):  # type: ignore[no-untyped-def]
    """Where the switch sends a frame (a story's `endpoint`): the outer destination of what leaves port 0."""

    def endpoint(frame) -> str:  # type: ignore[no-untyped-def]
        rig.inject(0, bytes(frame))
        got = rig.read(0, timeout=5)
        assert got is not None, "nothing left port 0"
        return str(Ether(got).payload.dst)

    return endpoint


def test_a_session_stays_with_its_instance_through_weight_changes_and_moves_when_it_drains(rig) -> None:
    """The same story as on XDP (tests.vectors.steering.session_story), on the switch's session registers."""
    sv.session_story(rig.node, endpoint_of(rig))


def test_a_new_connection_on_a_tuple_placed_per_flow_follows_its_session_after_a_placement_change(rig) -> None:
    """tests.vectors.steering.placement_change_story on the switch, as on XDP."""
    sv.placement_change_story(rig.node, endpoint_of(rig))


def test_two_choices_place_each_new_flow_on_the_lower_loaded_candidate(rig) -> None:
    """tests.vectors.steering.two_choices_story on the switch (its placed-flow registers), as on XDP."""
    assert sv.two_choices_story(rig.node, endpoint_of(rig)) > 0


def test_tables_read_back(rig) -> None:
    ring = rig.node.ring(sv.WEB4)
    slots = rig.node.service(sv.WEB4).instances
    share = {slots[s].instance_id: ring.count(s) for s in slots}
    assert share[13] > share[12] > share[11] > 0  # weights 3:2:1
    entries = rig.node.sw.read_table("services_v4")
    assert {dict(e.match)["hdr.l4.dport"] for e in entries} == {80, 8080, 8000, 8100}
    flags = {dict(e.match)["hdr.l4.dport"]: dict(e.params)["flags"] for e in entries}
    assert flags == {80: 0, 8080: 0, 8000: 1, 8100: 2}  # session-affine, two choices: read from the switch
    assert rig.node.service(sv.CHAT4).session and not rig.node.service(sv.WEB4).session
    # a two-choices service's second ring and loads (one in each load table per instance up)
    pick = rig.node.service(sv.PICK4)
    ring_b = [e for e in rig.node.sw.read_table("ring_b") if dict(e.match)["meta.svc_id"] == pick.svc_id]
    live = {dict(e.match)["ring_idx_b"]: dict(e.params)["slot"] for e in ring_b
            if dict(e.match)["meta.ring_sel"] == pick.ring_sel}  # fmt: skip
    assert [live[i] for i in range(len(live))] == rig.node.ring(sv.PICK4)
    for table in ("load_a", "load_b"):
        loads = {tuple(dict(e.params)[k] for k in ("value", "step", "free")) for e in rig.node.sw.read_table(table)}
        assert loads == {(i.load.value, i.load.step, i.load.free) for i in pick.instances.values() if i.load}


def test_p4runtime_shell_reads_back_what_dinet_wrote(rig) -> None:
    """p4runtime-shell (its own virtualenv: it pins protobuf < 3.21) connects as a second controller."""
    import json
    import subprocess

    from conftest import ROOT

    py = ROOT / ".venv-p4sh" / "bin" / "python"
    if not py.exists():
        pytest.fail("p4runtime-shell's virtualenv .venv-p4sh is missing: run `make install`")
    tables = ["DinetIngress.steering.services_v4", "DinetIngress.steering.instances"]
    res = subprocess.run(
        [str(py), str(ROOT / "tests" / "p4sh_read.py"), rig.switch.address, *tables],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    theirs = json.loads(res.stdout.strip().splitlines()[-1])
    for table in tables:
        mine = sorted(
            (
                {"match": sorted(v for _, v in e.match), "params": [v for _, v in e.params]}
                for e in rig.node.sw.read_table(table)
            ),
            key=lambda r: r["match"],
        )
        assert theirs[table] == mine and len(mine) >= 2, table


def test_unreachable_switch_and_refused_write_are_named(rig, tmp_path) -> None:
    from dinet.errors import DataPlaneError
    from dinet.targets.p4rt import P4RuntimeSwitch, TableEntry

    with pytest.raises(DataPlaneError, match="switch gone: no P4Runtime server at unix:"):
        P4RuntimeSwitch(f"unix:{tmp_path}/nothing.sock", name="gone", timeout=1).connect()
    e = rig.node.sw.read_table("services_v4")[0]
    again = TableEntry("services_v4", e.match, "set_service", e.params)
    with pytest.raises(DataPlaneError) as err:
        rig.node.sw.write([again])  # already there: the switch refuses the INSERT
    msg = str(err.value)
    assert rig.node.sw.name in msg and "services_v4" in msg and "INSERT" in msg, msg
    assert [x for x in rig.node.sw.read_table("services_v4") if x.match == e.match] == [e]  # nothing lost


def test_cli_reads_a_table_back_without_taking_over(rig) -> None:
    """`dinet p4 read` is a read-only client: the controller stays primary and can still write."""
    import json
    import subprocess
    import sys

    from tests.bmv2_harness import SIZES

    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "dinet.cli",
            "p4",
            "read",
            "--address",
            rig.switch.address,
            "--table",
            "services_v4",
            "--json",
            "--max-services",
            str(SIZES.max_services),
            "--max-instances",
            str(SIZES.max_instances),
            "--ring-size",
            str(SIZES.ring_size),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert {r["match"]["hdr.l4.dport"] for r in rows} == {80, 8080, 8000, 8100}
    rig.node.set_weight(sv.WEB4, 11, 2)  # still primary


def test_a_transient_failure_reconnects_and_wipes_nothing(rig) -> None:
    """The P4Runtime session breaks while the switch runs on: the node reconnects, finds its pipeline (the
    cookie) and its tables there and writes nothing (no pipeline set, so the registers stay); every vector
    still gives its answer."""
    rig.node.pipeline = rig.pipe
    for v in sv.vectors(sv.placement(rig.node)):  # flows remembered in the registers
        run_vector(rig, v)
    tables = ("services_v4", "instances", "ring", "vip_v6")
    before = {t: sorted(map(repr, rig.node.sw.read_table(t))) for t in tables}
    writes = rig.node.writes
    rig.node.sw.close()  # the channel is gone: the next read fails
    assert rig.node.check() == "reconnected"
    assert rig.node.writes == writes
    assert {t: sorted(map(repr, rig.node.sw.read_table(t))) for t in tables} == before
    for v in sv.vectors(sv.placement(rig.node)):
        run_vector(rig, v)
    assert rig.node.check() == "ok"


def test_a_weight_change_writes_only_the_ring_slots_that_change(rig, monkeypatch) -> None:
    """The staged ring half is written only where it differs from what it held (BMv2 took about a second for
    a whole 4,096-slot half under load); the live half is untouched until the service entry switches to the
    staged one. After the switch is read back (after a failed write, or a controller restart) the entries read
    compare equal to those written, and a slot a half-done write took away is inserted again."""
    node = rig.node

    def halves() -> dict[int, dict[int, int]]:
        svc_id, out = node.service(sv.WEB4).svc_id, {0: {}, 1: {}}
        for e in node.sw.read_table("ring"):
            m = dict(e.match)
            if m["meta.svc_id"] == svc_id:
                out[m["meta.ring_sel"]][m["meta.ring_idx"]] = dict(e.params)["slot"]
        return out

    from tests.bmv2_harness import SIZES

    written: list[tuple[str, str]] = []
    real = node.sw.write

    def spy(entries, op="INSERT"):  # type: ignore[no-untyped-def]
        written.extend((e.table, op) for e in entries)
        return real(entries, op)

    monkeypatch.setattr(node.sw, "write", spy)
    slot11 = next(s for s, i in node.service(sv.WEB4).instances.items() if i.instance_id == 11)

    def change(weight: int, missing: int = 0) -> int:
        """Instance 11's weight set; what the ring halves hold checked; the slots written returned."""
        written.clear()
        live, before = node.service(sv.WEB4).ring_sel, halves()
        node.set_weight(sv.WEB4, 11, weight)
        after, staged = halves(), live ^ 1
        differ = sum(before[staged].get(i) != after[staged][i] for i in after[staged])
        assert len(after[staged]) == SIZES.ring_size and len(before[staged]) == SIZES.ring_size - missing
        assert node.service(sv.WEB4).ring_sel == staged and after[live] == before[live]  # live half untouched
        share = list(after[staged].values()).count(slot11), list(before[live].values()).count(slot11)
        assert share[0] > share[1] if weight > 1 else share[0] < share[1]
        assert written.count(("ring", "INSERT")) == missing
        assert written.count(("ring", "MODIFY")) == differ - missing
        assert ("services_v4", "MODIFY") in written  # then the service entry switches halves
        return differ

    assert 0 < change(4) < SIZES.ring_size  # 1 -> 4 of 3:2:1
    # a write that failed half-way took a slot of the staged half away: reading the switch back counts it as
    # gone (it was kept as written), and it is inserted again
    st = node.service(sv.WEB4)
    ring = [e for e in node.sw.read_table("ring") if dict(e.match)["meta.svc_id"] == st.svc_id]
    real([next(e for e in ring if dict(e.match)["meta.ring_sel"] == st.ring_sel ^ 1)], "DELETE")
    node.adopt()  # the record is now what the switch read back
    assert 0 < change(1, missing=1) < SIZES.ring_size  # and the entries read back compare equal to those written


def test_state_is_pushed_again_after_the_switch_restarts(rig) -> None:
    """Last in this module: the switch dies and comes back empty; the node writes back all it had written."""
    from dinet.errors import DataPlaneError

    before = {t: sorted(map(repr, rig.node.sw.read_table(t))) for t in ("services_v4", "instances", "ring", "vip_v6")}
    from dinet.services.run import keep_in_sync

    assert not keep_in_sync(rig.node)  # healthy: nothing to do
    rig.switch.restart()
    with pytest.raises(DataPlaneError, match=rig.node.sw.name):
        rig.node.sw.read_table("services_v4")  # the old session is gone, and the error says which switch
    rig.node.pipeline = rig.pipe
    assert keep_in_sync(rig.node)  # what `dinet run` does every half second
    assert len(rig.node._entries) > 500  # two ring halves alone
    after = {t: sorted(map(repr, rig.node.sw.read_table(t))) for t in before}
    assert after == before
    for v in sv.vectors(sv.placement(rig.node)):
        run_vector(rig, v)
