"""The two data planes side by side (bench/differential.py at CI size): 400 steering frames, half fuzzed,
through the XDP program and through BMv2 with the same tables give the same frame out, pass or drop, and
the same verdict counter; 300 BIER and BFIR frames, half fuzzed, through the eBPF BIER node and BMv2 give
the same copies on every port and the same counters."""

from __future__ import annotations

from conftest import NS_PREFIX, bmv2_tools_or_skip, needs_bcc, needs_root

pytestmark = [needs_root, needs_bcc]


def test_xdp_and_bmv2_agree_frame_by_frame() -> None:
    bmv2_tools_or_skip()
    from bench import differential

    res = differential.run(400, seed=15, mutate=True, prefix=f"{NS_PREFIX}df", progress=False)
    assert res["differences"] == 0, res["examples"]
    assert {"forward", "drop", "pass"} <= set(res["outcomes"])  # every outcome was compared


def test_ebpf_and_bmv2_bier_agree_frame_by_frame() -> None:
    bmv2_tools_or_skip()
    from bench import differential

    res = differential.run_bier(300, seed=16, mutate=True, prefix=f"{NS_PREFIX}db", progress=False)
    assert res["differences"] == 0, res["examples"]
    assert "copies" in res["outcomes"] and any(k.startswith("drop") for k in res["outcomes"])
