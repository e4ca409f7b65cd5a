"""Split inference (issue 27; AI Flow's device-edge-cloud cooperation; draft-song s4.5, privacy-preserving split
inference): the first k of a model's L layers run on the device or on premises (the head), the other L - k on
an edge or cloud instance behind a service VIP (the tail). Only the head sees the prompt: what crosses the
network are the activations at the cut, hidden x tokens x 2 bytes (FP16), for the whole prompt at once
(prefill) and then one token's for every token generated (decode), and the tail's tokens coming back.

What is real: two `dinet serve` processes, one WebSocket per request (one flow: the network keeps it on its
tail; over TLS where the lab runs it), activation bytes of the right size on the wire for the prefill and
for every token, the round trip paid per token, the tail's engine computing its share in its shared batch.
What is a model: the values (bytes from a seeded generator: their size is the workload, not their content)
and the compute split. The head's share is its hardware's profile scaled to k/L of the layers (each step,
each prefill token); the tail counts (L - k)/L of the prompt's tokens in its batch (its compute and KV cache
both scale with the layers it holds) and each decode token takes one sequence's slot in its batch step.

The split point, per request: the head predicts the end-to-end time of every k from the privacy floor (the
layers that must stay on premises; default FLOOR: the embedding and the first layers, whose activations are
closest to the tokens) to L (all on premises: nothing crosses), from what it measured: the uplink's rate and
round trip (from each request's upload and per-token exchanges), and the tail's time per prefill token and
per decode step (the tail reports its time with every answer: its load shows there). A transformer's
activations have the same size at every layer boundary, so the bytes do not depend on k and the prediction
is linear in k: the best split is the floor or L, and the path's rate and delay and the tail's load decide
which (AI Flow's adaptive paradigm). An upload in flight that takes longer than the estimates say bounds the
rate for the next decisions at once (`bounded`), and a request whose first token has not come back by the
time the whole request would have finished on premises is abandoned and computed there (a rate drop costs
at most that). While it keeps everything local, the head probes the path every PROBE_S with a small split
request of its own, so that it sees the path recover."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

from ..errors import ConfigError
from .engine import Profile

BYTES_PER_VALUE = 2  # FP16 activations
FLOOR = 2  # layers that stay on premises whatever the path (the privacy floor)
PROBE_S = 3.0  # while all runs locally: a probe of the path this often
PROBE_TOKENS = 8  # a probe's prompt (its activations: 8 x hidden x 2 bytes, 64 KiB for a hidden size of 4096)
# activations travel in WebSocket messages of at most this many bytes: what waits in the process to be sent
# stays small (the socket's own buffer is what an abandoned request's reset drops)
CHUNK = 1 << 16


def activation_bytes(hidden: int, tokens: int) -> int:
    """Bytes of the activations of `tokens` tokens at a cut: hidden x tokens x 2."""
    return hidden * tokens * BYTES_PER_VALUE


def activations(session: str, n: int) -> bytes:
    """n bytes standing for a cut's activations (seeded by the session: the size is the workload)."""
    return random.Random(session).randbytes(n)


def check_split(p: Profile, floor: int, fixed: int | None) -> None:
    if p.layers < 2 or p.hidden < 1:
        raise ConfigError(f"profile {p.model} gives no layers and hidden size: it cannot be split")
    if not 1 <= floor <= p.layers:
        raise ConfigError(f"the privacy floor is 1..{p.layers} layers, not {floor}")
    if fixed is not None and not floor <= fixed <= p.layers:
        raise ConfigError(f"a fixed split is {floor}..{p.layers} layers (the floor to all), not {fixed}")


def head_profile(p: Profile, k: int) -> Profile:
    """The head's engine for k of the model's layers: k/L of every step and of every prefill token."""
    f = k / p.layers
    return replace(
        p, prefill_tps=p.prefill_tps / f, decode_base_ms=p.decode_base_ms * f, decode_per_seq_ms=p.decode_per_seq_ms * f
    )


def tail_tokens(tokens: int, k: int, layers: int) -> int:
    """The tail's prefill work for `tokens` prompt tokens cut after layer k, in whole-model tokens."""
    return max(1, round(tokens * (layers - k) / layers))


@dataclass
class Estimates:
    """What the head measured (each an exponentially weighted mean): the uplink's rate and round trip, the
    tail's seconds per whole-model prefill token and per decode step (its queue and batch included)."""

    rate_bps: float = 100e6
    rtt_s: float = 0.01
    tail_prefill_s: float = 1 / 7800  # per whole-model token: a prior until a tail answers
    tail_step_s: float = 0.015
    weight: float = 0.5
    samples: int = 0  # split requests measured

    def _mix(self, old: float, new: float) -> float:
        return new if self.samples == 0 else old + self.weight * (new - old)

    def update(self, up_bytes: int, tok_bytes: int, prefill_s: float, tail_prefill_s: float, tail_work: int,
               token_s: list[float], tail_token_s: list[float]) -> None:  # fmt: skip
        """From one split request: the prefill exchange (upload + round trip + the tail's prefill, which the
        tail reported) and the per-token exchanges (one token's activations + round trip + the tail's step)."""
        if tail_work > 0:
            self.tail_prefill_s = self._mix(self.tail_prefill_s, tail_prefill_s / tail_work)
        a = prefill_s - tail_prefill_s  # up_bytes at the rate + a round trip
        if token_s:
            nets = [t - s for t, s in zip(token_s, tail_token_s, strict=True)]
            recent = max(4, len(nets) // 4)  # the path as it is now: the last exchanges, and as it was
            b = sorted(nets[-recent:])[len(nets[-recent:]) // 2]  # tok_bytes at the rate + a round trip
            b0 = sorted(nets[:recent])[len(nets[:recent]) // 2]
            self.tail_step_s = self._mix(self.tail_step_s, sorted(tail_token_s)[len(tail_token_s) // 2])
            if b > 2 * b0 > 0 and b > self.rtt_s:
                # the last token exchanges took more than twice the first ones: the path changed during the
                # request, and its prompt's upload no longer says what the path is. The round trip is taken
                # as it was and the rate as what the rest allows (a delay rise is read as a rate drop: either
                # way a split costs more now; not mixed with the old rate, which is stale); the next probe
                # tells them apart
                self.rate_bps = tok_bytes * 8 / (b - self.rtt_s)
            elif a > b > 0 and up_bytes > tok_bytes:
                rate = (up_bytes - tok_bytes) * 8 / (a - b)
                self.rate_bps = self._mix(self.rate_bps, rate)
                self.rtt_s = self._mix(self.rtt_s, max(0.0, b - tok_bytes * 8 / rate))
            elif b > 0:
                self.rtt_s = self._mix(self.rtt_s, b)
        elif a > 0:  # no decode exchange: the prefill alone, the round trip as it was
            self.rate_bps = self._mix(self.rate_bps, up_bytes * 8 / max(a - self.rtt_s, 1e-6))
        self.samples += 1

    def slow_upload(self, up_bytes: int, elapsed: float) -> None:
        """An upload that had not been answered after `elapsed` seconds: the rate is at most what would
        have carried it in that time."""
        self.rate_bps = min(self.rate_bps, up_bytes * 8 / max(elapsed, 1e-6))


def bounded(est: Estimates, inflight: list[tuple[float, int, float]], now: float) -> Estimates:
    """The estimates with the uplink's rate bounded by the exchanges in flight ((start, bytes, the seconds
    of it that are not the transfer: round trip and the tail's time) each) that took more than twice what the
    estimates say: a rate drop shows at the next token of a request that met it, not at its end."""
    rate = est.rate_bps
    for t0, n, other in inflight:
        if now - t0 > 2 * (n * 8 / est.rate_bps + other):
            rate = min(rate, n * 8 / max(now - t0 - other, 1e-3))
    return est if rate == est.rate_bps else replace(est, rate_bps=rate)


def predict(p: Profile, k: int, prompt: int, out: int, est: Estimates) -> float:
    """Predicted seconds from the request to its last token when cut after layer k (k = L: all on premises)."""
    f = k / p.layers
    head_step = f * (p.decode_base_ms + p.decode_per_seq_ms) / 1000
    head_prefill = max(f * p.decode_base_ms / 1000, f * prompt / p.prefill_tps) + f * p.decode_per_seq_ms / 1000
    if k == p.layers:
        return head_prefill + (out - 1) * head_step
    up = activation_bytes(p.hidden, prompt) * 8 / est.rate_bps
    ttft = head_prefill + up + est.rtt_s + tail_tokens(prompt, k, p.layers) * est.tail_prefill_s + est.tail_step_s
    per_token = head_step + activation_bytes(p.hidden, 1) * 8 / est.rate_bps + est.rtt_s + est.tail_step_s
    return ttft + (out - 1) * per_token


def choose(p: Profile, prompt: int, out: int, est: Estimates, floor: int) -> int:
    """The split with the least predicted time, from the floor to all on premises (a tie: more on premises)."""
    return min(range(floor, p.layers + 1), key=lambda k: (predict(p, k, prompt, out, est), -k))


def split_request(msg: Any, p: Profile) -> tuple[str, int, int, int]:
    """(session, split, prompt tokens, max tokens) of a split request's opening message, checked against this
    tail's model (ConfigError says what is wrong)."""
    if not isinstance(msg, dict):
        raise ConfigError("a split request opens with a JSON object")
    session, layers, hidden = msg.get("session"), msg.get("layers"), msg.get("hidden")
    k, prompt, out = msg.get("split"), msg.get("prompt"), msg.get("max_tokens")
    if not isinstance(session, str) or not 1 <= len(session) <= 64:
        raise ConfigError("session is a string of 1-64 characters")
    if (layers, hidden) != (p.layers, p.hidden):
        raise ConfigError(f"this tail runs {p.model} ({p.layers} layers, hidden {p.hidden}), not {layers}/{hidden}")
    for name, v, lo, hi in (("split", k, 1, p.layers - 1), ("prompt", prompt, 1, p.max_model_len),
                            ("max_tokens", out, 1, p.max_model_len)):  # fmt: skip
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ConfigError(f"{name} is an integer {lo}..{hi}, not {v!r}")
    return session, int(k), int(prompt), int(out)  # type: ignore[arg-type]
