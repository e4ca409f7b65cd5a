"""The chaos run's quick form (bench/chaos.py --quick): a cloud-edge lab under steady load while its metrics
agent, a model server, the controller and a path are killed or cut and brought back, one after another.
What a user relies on holds throughout: `dinet run` never exits on its own, no request is lost and no
established flow moves except on an instance under a fault, every instance that reports again is back in
service within the expiry plus one decision, and the lab leaves nothing behind."""

from __future__ import annotations

import pytest

from conftest import bmv2_tools_or_skip, mininet_or_skip, needs_bcc, needs_root


@needs_root
@needs_bcc
@pytest.mark.timeout(900)
@pytest.mark.parametrize("target", ["xdp", "bmv2"])
def test_the_control_plane_rides_out_one_fault_of_each_kind_under_load(target: str) -> None:
    """On XDP the ingress node's node agent is also killed and restarted (the program forwards on, `dinet run`
    retries and resyncs); on BMv2 the ingress switch, which starts again empty: `dinet run` writes it back."""
    mininet_or_skip()
    if target == "bmv2":
        bmv2_tools_or_skip()
    from bench import chaos

    res = chaos.run(quick=True, seed=1, target=target)
    assert res["by_kind"] == dict.fromkeys(chaos.kinds_of(target), 1)
    assert res["requests"] > 100  # the load ran throughout
    assert res["controller_exits"] == 0
    why = {k: res[k] for k in ("unexplained", "fault_log", "load_start_epoch")}  # to read beside the lab's logs
    assert res["lost_unexplained"] == 0 and res["flows_moved_unexplained"] == 0, why
    assert res["late_or_never_back"] == 0, res["fault_log"]
    assert res["leftovers"] == []
    # the controller was away for seconds; with it back, decisions resumed (the longest gap is bounded)
    assert res["longest_without_decision_s"] < res["duration_s"] / 2
