"""`dinet load` measures what a field tool measures: NVIDIA AIPerf and dinet load replay one arrival trace
(Poisson, 2 requests/s, the same prompt and output lengths) against one `dinet serve`. For the same arrival
they read the same TTFT (the median of AIPerf's minus dinet load's, request by request, within 3 ms), the same
TPOT (AIPerf's inter-token latency; medians within 2 ms or 15%) and the same tokens sent and received.
Request by request, not median against median: a request that arrives while the engine runs another's step
waits for that step (30-45 ms against 19 ms alone), and where an arrival falls in a step is a draw of its own,
so the medians of two 16-request runs stand up to 6 ms apart on the same trace (bench/crosscheck.py).
AIPerf is installed into the user's cache on first use (its own venv, no torch, a word-level tokenizer on
disk)."""

from __future__ import annotations

import pytest


@pytest.mark.timeout(1200)  # the first run installs AIPerf (a few minutes)
def test_dinet_load_and_aiperf_measure_the_same_ttft_and_tpot() -> None:
    from bench.crosscheck import run

    res = run(rate=2.0, requests=16, prompt=128, output=32)
    a, d = res["aiperf"], res["dinet_load"]
    assert a["requests"] == d["requests"] == 16 and d["errors"] == 0
    assert a["input_tokens"] == d["input_tokens"] == 128 and a["output_tokens"] == d["output_tokens"] == 32
    assert abs(res["paired_ttft_difference_p50_ms"]) <= 3.0, (res["paired_ttft_difference_p50_ms"], a, d)
    assert abs(a["tpot_p50_ms"] - d["tpot_p50_ms"]) <= max(2.0, 0.15 * a["tpot_p50_ms"]), (a, d)
