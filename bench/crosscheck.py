"""dinet load against a field tool: NVIDIA AIPerf and `dinet load` measure the same `dinet serve` (on loopback)
replaying one arrival trace (Poisson at the given rate, drawn once from the seed; AIPerf reads it as a single-turn
dataset with a fixed schedule, dinet load as an Azure trace), with the same prompt and output lengths; their TTFT
and TPOT (AIPerf: inter-token latency) medians are printed side by side and written to JSON. One trace for
both matters: a request that arrives while the engine runs another one's step waits for that step (TTFT 30-45
ms against 19 ms alone), so two tools drawing their own Poisson arrivals would compare two samples of the
engine, not their clocks (16 requests: medians 21-25 ms apart run to run).

AIPerf lives in a venv of its own, made on first use (`pip install aiperf==0.13.0`, about 1.2 GB, no torch,
a few minutes) in the user's cache (`$XDG_CACHE_HOME/dinet/aiperf-0.13.0`, default `~/.cache/dinet/...`),
as pre-commit and tox keep theirs: a fresh clone on the same machine uses it again, another version gets a
venv of its own. Offline, it needs a tokenizer on disk: a word-level tokenizer
(Hugging Face `tokenizers`, whitespace split) is written beside it, so that its prompts of N tokens are the N
words `dinet serve` counts.

    sudo .venv/bin/python -m bench.crosscheck [--quick] [--json bench/results/crosscheck.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import free_port, host, write
from dinet.workload.engine import PROFILES
from dinet.workload.load import poisson

AIPERF = "aiperf==0.13.0"
TOKENIZER = """
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
vocab = {f"w{i}": i for i in range(4000)}
vocab["[UNK]"] = 4000
tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(__import__("sys").argv[1])
"""


def aiperf_venv() -> Path:
    """Where AIPerf's venv lives: the user's cache, one venv per AIPerf version."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "dinet" / AIPERF.replace("==", "-")


def ensure_aiperf(venv: Path | None = None) -> tuple[Path, Path]:
    """(the aiperf command, the tokenizer folder), installed on first use (an install cut short is done
    again: the venv counts as installed only once pip has finished)."""
    venv = venv or aiperf_venv()
    exe, tok, done = venv / "bin" / "aiperf", venv / "word-tokenizer", venv / ".dinet-installed"
    if not done.exists():
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", AIPERF], check=True)
        done.write_text(AIPERF + "\n")
    if not (tok / "tokenizer.json").exists():
        subprocess.run([str(venv / "bin" / "python"), "-c", TOKENIZER, str(tok)], check=True, capture_output=True)
    return exe, tok


def write_trace(folder: Path, rate: float, requests: int, prompt: int, output: int, seed: int = 1) -> float:
    """One Poisson arrival trace in both tools' formats: `trace.jsonl` (AIPerf's single-turn dataset: timestamp
    in ms, the prompt's text, output length; a prompt of `prompt` words of the tokenizer's vocabulary, each
    request's its own, so that no prefix is cached) and `trace.csv` (Azure: TIMESTAMP in seconds,
    ContextTokens, GeneratedTokens). Returns the last arrival (seconds)."""
    import random

    at = list(poisson([(0.0, rate)], 10 * requests / rate, random.Random(seed)))[:requests]
    assert len(at) == requests, "the trace is shorter than the requests asked for"
    ms = [round(t * 1000) for t in at]
    words = lambda k: " ".join(f"w{(k * prompt + i) % 4000}" for i in range(prompt))  # noqa: E731
    rows = [{"timestamp": t, "text": words(k), "output_length": output} for k, t in enumerate(ms)]
    (folder / "trace.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"] + [f"{t / 1000},{prompt},{output}" for t in ms]
    (folder / "trace.csv").write_text("\n".join(lines) + "\n")
    return ms[-1] / 1000


def run(
    rate: float = 2.0, requests: int = 20, prompt: int = 128, output: int = 32, profile: str = "llama3-8b-a100"
) -> dict:  # type: ignore[type-arg]
    aiperf, tok = ensure_aiperf()
    port = free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "dinet.cli", "serve", "--listen", f"127.0.0.1:{port}", "--profile", profile],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert serve.stdout is not None and serve.stdout.readline().startswith("ready")
        url = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as d:
            model = PROFILES[profile].model  # the name it serves (another one is a 404, as in vLLM)
            last = write_trace(Path(d), rate, requests, prompt, output)
            args = [str(aiperf), "profile", "--model-names", model, "--url", url, "--endpoint-type", "completions"]
            args += ["--streaming", "--tokenizer", str(tok), "--random-seed", "1", "--output-artifact-dir", d]
            args += ["--input-file", str(Path(d) / "trace.jsonl"), "--custom-dataset-type", "single_turn"]
            args += ["--fixed-schedule"]
            res = subprocess.run(args, capture_output=True, text=True, timeout=600)
            if res.returncode != 0:
                raise RuntimeError(f"aiperf failed: {res.stdout[-2000:]}{res.stderr[-2000:]}")
            a = json.loads((Path(d) / "profile_export_aiperf.json").read_text())
            per = [json.loads(x) for x in (Path(d) / "profile_export.jsonl").read_text().splitlines() if x.strip()]
            out = Path(d) / "dinet-load.jsonl"
            load = [sys.executable, "-m", "dinet.cli", "load", "--url", url, "--trace", str(Path(d) / "trace.csv")]
            load += ["--duration", str(last + 1), "--max-requests", str(requests), "--out", str(out), "--quiet"]
            load += ["--sensitive-share", "1", "--seed", "1"]
            subprocess.run(load, check=True, capture_output=True, timeout=600)
            recs = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
    finally:
        serve.terminate()
        serve.wait(timeout=10)
        if serve.stdout:
            serve.stdout.close()
    ok = [r for r in recs if r["status"] == "ok"]
    # request by request in arrival order (the same trace): what each tool read for the same arrival
    theirs = [
        x["metrics"]["time_to_first_token"]["value"]
        for x in sorted(per, key=lambda x: x["metadata"]["request_start_ns"])
    ]
    ours = [r["ttft_ms"] for r in sorted(ok, key=lambda r: r["sent_s"])]
    paired = [t - o for t, o in zip(theirs, ours, strict=True)] if len(theirs) == len(ours) else []
    # AIPerf's own clock from its start to the request on the wire (TTFT minus its time waiting for the server)
    own = [x["metrics"]["time_to_first_token"]["value"] - x["metrics"]["http_req_waiting"]["value"] for x in per]
    return {
        "server": {"profile": profile, "rate": rate, "prompt_tokens": prompt, "output_tokens": output},
        "aiperf": {
            "version": AIPERF,
            "requests": int(a["request_count"]["avg"]),
            "ttft_p50_ms": a["time_to_first_token"]["p50"],
            "tpot_p50_ms": a["inter_token_latency"]["p50"],
            "input_tokens": a["input_sequence_length"]["avg"],
            "output_tokens": a["output_sequence_length"]["avg"],
            "client_overhead_p50_ms": statistics.median(own),
        },
        "dinet_load": {
            "requests": len(ok),
            "errors": len(recs) - len(ok),
            "ttft_p50_ms": statistics.median(r["ttft_ms"] for r in ok),
            "tpot_p50_ms": statistics.median(r["tpot_ms"] for r in ok),
            "input_tokens": statistics.mean(r["prompt_tokens"] for r in ok),
            "output_tokens": statistics.mean(r["completion_tokens"] for r in ok),
        },
        # AIPerf's TTFT minus dinet load's for the same arrival, median over the trace (None: a request missing)
        "paired_ttft_difference_p50_ms": statistics.median(paired) if paired else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "crosscheck.json")
    a = ap.parse_args()
    res = run(requests=10 if a.quick else 40)
    for tool in ("aiperf", "dinet_load"):
        r = res[tool]
        print(
            f"{tool:<11} {r['requests']:>3} requests  TTFT p50 {r['ttft_p50_ms']:6.2f} ms  TPOT p50 "
            f"{r['tpot_p50_ms']:6.2f} ms  tokens in/out {r['input_tokens']:.0f}/{r['output_tokens']:.0f}"
        )
    paired = res["paired_ttft_difference_p50_ms"]
    print(
        "same arrival, AIPerf minus dinet load: TTFT p50 "
        + (f"{paired:+.2f} ms" if paired is not None else "n/a (a request missing)")
    )
    write({"host": host(), **res}, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
