"""The model-sync model (dinet.sync.model): a fit recovers known parameters, predicts what it was not fitted on,
and answers the draft's question in the shape the README gives. Pure Python."""

from __future__ import annotations

import pytest

from dinet.errors import ConfigError
from dinet.sync.model import MethodFit, draft_table, errors, fit, loss_repairs, predict, with_tree

RATE = 200.0  # Mbit/s
TRUE = {
    "bier": MethodFit("bier", 1.5, 0.05, 0.8, 0.07, 0),
    "ingress": MethodFit("ingress", 0.4, 0.02, 0.9, 0.07, 0),
    "unicast": MethodFit("unicast", 0.2, 0.01, 0.95, 0.05, 0),
}


def _rows(ns, sizes_mib):  # type: ignore[no-untyped-def]
    out = []
    for m, f in TRUE.items():
        for n in ns:
            for mib in sizes_mib:
                t, up = predict(f, n, mib << 20, RATE)
                out.append({"method": m, "n": n, "size_bytes": mib << 20, "completion_s": t, "uplink_bytes": up})
    return out


def test_a_fit_recovers_the_parameters_and_predicts_a_larger_domain() -> None:
    fits = fit(_rows((2, 4, 8, 16), (16, 64)), RATE)
    for m, f in TRUE.items():
        got = fits[m]
        assert got.fixed_s == pytest.approx(f.fixed_s, abs=1e-6)
        assert got.per_cloud_s == pytest.approx(f.per_cloud_s, abs=1e-6)
        assert got.efficiency == pytest.approx(f.efficiency, rel=1e-6)
        assert got.header_share == pytest.approx(f.header_share, rel=1e-6)
    held_out = errors(fits, _rows((32,), (16,)), RATE)
    assert len(held_out) == 3 and all(abs(e["error"]) < 1e-6 for e in held_out)


def test_one_size_cannot_tell_a_fixed_cost_from_the_rate() -> None:
    with pytest.raises(ConfigError, match="two sizes"):
        fit(_rows((2, 4, 8), (64,)), RATE)


def test_the_draft_table_has_every_method_and_bier_sends_the_model_once_on_the_uplink() -> None:
    fits = with_tree(dict(TRUE), setup_s=0.2)
    table = draft_table(fits, sizes_gb=(70,), clouds=(10, 100), link_gbit=(100,), tree_setup_s={10: 0.1, 100: 0.5})
    assert [(r["clouds"], r["link_gbit"]) for r in table] == [(10, 100), (100, 100)]
    big = table[1]
    assert big["bier"]["uplink_gb"] == pytest.approx(70 * 1.07, rel=0.01)  # once, whatever N
    assert big["ingress"]["uplink_gb"] == pytest.approx(100 * 70 * 1.07, rel=0.01)  # every copy
    assert big["bier"]["s"] < big["ingress"]["s"] / 40  # 13.5 s against 625
    assert big["tree"]["s"] == pytest.approx(big["bier"]["s"] + 0.2 + 0.5, abs=0.11)


def test_repairs_under_loss_scale_with_the_loss() -> None:
    clean = 100e6
    rows = [{"loss": p, "size_bytes": 100e6, "uplink_bytes": clean + 3 * p * 100e6} for p in (0.01, 0.05)]
    assert loss_repairs(rows, clean) == pytest.approx(3.0)


def test_a_replicated_transfer_bound_by_the_labs_shared_cpu_is_fitted_as_such_and_left_out_at_scale() -> None:
    """BIER in the lab: its network time does not grow with N, but N receivers share the lab's cores (c x N x S);
    the fit finds both regimes, predicts a held-out N, and the draft's answer leaves the lab's CPU out."""
    truth = MethodFit("bier", 0.5, 0.01, 0.85, 0.07, 0, shared_cpu_s_per_cloud_byte=0.012 / (1 << 20))
    rows = []
    for n in (2, 4, 8, 16, 32):
        for mib in (16, 48):
            t, up = predict(truth, n, mib << 20, RATE, emulated=True)
            rows.append({"method": "bier", "n": n, "size_bytes": mib << 20, "completion_s": t, "uplink_bytes": up})
    fits = fit([r for r in rows if r["n"] != 32], RATE)
    held = errors(fits, [r for r in rows if r["n"] == 32], RATE)
    assert all(abs(e["error"]) < 0.02 for e in held), held
    got = fits["bier"].shared_cpu_s_per_cloud_byte
    assert got == pytest.approx(truth.shared_cpu_s_per_cloud_byte, rel=0.05)
    # at scale the receivers have machines of their own: the network's time alone
    alone, _ = predict(fits["bier"], 100, 70e9, 100_000)
    assert alone == pytest.approx(predict(truth, 100, 70e9, 100_000)[0], rel=0.05)
    assert alone < predict(fits["bier"], 100, 70e9, 100_000, emulated=True)[0] / 10
