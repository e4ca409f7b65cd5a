"""The fuzzers of bench/fuzz.py at CI size: 20,000 random and mutated frames through the XDP steering program,
each outcome checked against the reference model of the steering contract, then instance sets changing
while flows arrive on both CPUs; 20,000 through the BIER program, copies and counters checked per batch
against a model of RFC 8279 s6.5. Any violation is a bug in the program (or in the model: read both)."""

from __future__ import annotations

from conftest import needs_bcc, needs_root

pytestmark = [needs_root, needs_bcc]


def test_20000_fuzzed_frames_break_no_invariant() -> None:
    from bench import fuzz

    res = fuzz.fuzz_steering(20_000, seed=14, progress=False)
    assert res["violations"] == 0, res["examples"]
    # the mutations reach every outcome of the contract, so the invariants were exercised on each
    assert {"steer", "drop_malformed", "drop_fragment", "pass_not_service", "pass_unknown_service"} <= set(
        res["outcomes"]
    )


def test_the_model_tells_steered_from_malformed() -> None:
    """The reference model is not the program's echo: a frame the program must drop is one the model
    calls malformed, and a well-formed one it calls steered."""
    from bench import fuzz
    from tests.vectors import steering as sv

    services = {(bytes([10, 99, 0, 1]), 6, 80): {bytes([192, 0, 2, 11])}}
    vips = {bytes([10, 99, 0, 1])}
    good = bytes(sv.client4())
    assert fuzz.model(good, services, vips)[0] == "steer"
    cut = good[: 14 + 20 + 6]  # the TCP header cut to 6 bytes
    assert fuzz.model(cut, services, vips) == ("drop", "drop_malformed")


def test_20000_fuzzed_frames_through_bier_match_the_model() -> None:
    from bench import fuzz

    res = fuzz.fuzz_bier(20_000, seed=14, progress=False)
    assert res["violations"] == 0, res["examples"]
    assert {"copies", "local", "pass", "drop_truncated", "drop_malformed", "drop_ttl"} <= set(res["outcomes"])
