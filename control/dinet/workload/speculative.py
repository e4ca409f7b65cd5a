"""Speculative decoding across the network (issue 27; AI Flow's device-edge-cloud cooperation): a small draft
model proposes k tokens, a large target model behind a service VIP verifies them in one forward pass, and
the accepted ones plus one of the target's own are the round's output (Leviathan et al., "Fast Inference from
Transformers via Speculative Decoding", ICML 2023).

What is real: two `dinet serve` processes, the draft's engine drafting k tokens (k of its decode steps), one
HTTP request per round on one connection per session (one flow: the network keeps it on its verifier), the
verifier's engine computing the k drafted tokens (and, for a session it does not hold, the whole context
again) and one token more. What is a model: which drafted tokens the target accepts. Each is accepted with
probability `alpha` until the first rejection (the i.i.d. model of Leviathan et al., s3.1), so a round
yields min(k, accepted) + 1 tokens and on average (1 - alpha^(k+1)) / (1 - alpha). alpha is a property of the
model pair; the default, 0.7, is inside the 0.5-0.8 their Table 3 reports for a small drafter and a large
target. The draw is seeded by session and position: the same session gives the same acceptances.

k adapts to the round trip (as AI Flow's adaptive paradigms do): each round takes k x the draft's time per
token + the verifier's answer time (network and its engine), both measured, and k is the one of 1..K_MAX
that maximises the expected tokens per second of the next round."""

from __future__ import annotations

import collections
import random
from dataclasses import dataclass, field

from ..errors import ConfigError

ALPHA = 0.7  # the acceptance rate of a small draft / large target pair (Leviathan et al. 2023, Table 3)
K_MAX = 16
REPLACE_MIN_S = 0.25  # a drafter leaves its verifier (replace_after) no sooner than this into a round
MAX_REPLACE = 2  # times a session may leave its verifier
MAX_SESSIONS = 4096  # sessions whose context a verifier remembers (least recently used first out)


def accepted(session: str, position: int, k: int, alpha: float) -> int:
    """How many of k drafted tokens the target accepts (leading successes of p = alpha), seeded by the session
    and the position of the first drafted token."""
    rng = random.Random(f"{session}:{position}")
    n = 0
    while n < k and rng.random() < alpha:
        n += 1
    return n


def expected_tokens(k: int, alpha: float) -> float:
    """Tokens a round yields on average: the accepted drafts and the target's own one."""
    return float(k + 1) if alpha >= 1.0 else (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


def best_k(draft_s: float, answer_s: float, alpha: float) -> int:
    """The k of 1..K_MAX with the most expected tokens per second: k x draft_s (drafting) + answer_s (the
    verify round trip) per round."""
    return max(range(1, K_MAX + 1), key=lambda k: expected_tokens(k, alpha) / (k * draft_s + answer_s))


@dataclass
class Ewma:
    value: float
    weight: float = 0.3

    def add(self, x: float) -> float:
        self.value += self.weight * (x - self.value)
        return self.value


@dataclass
class SessionCache:
    """The contexts a verifier holds, by session: a round of a session it holds computes only the drafted
    tokens; one it does not (a new session, or one the network moved here) computes the whole context
    again. Its KV footprint is not modelled beyond the round itself (the engine's accounting holds the round)."""

    sessions: collections.OrderedDict[str, int] = field(default_factory=collections.OrderedDict)
    hits: int = 0
    misses: int = 0

    def to_compute(self, session: str, context: int, draft: int) -> tuple[int, bool]:
        """(tokens the verify pass computes, whether the session's context was held)."""
        held = min(self.sessions.get(session, 0), context)
        if held:
            self.hits += 1
            self.sessions.move_to_end(session)
        else:
            self.misses += 1
        return context - held + draft, bool(held)

    def hold(self, session: str, context: int) -> None:
        self.sessions[session] = context
        self.sessions.move_to_end(session)
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)


def verify_request(body: object) -> tuple[str, int, int, float]:
    """(session, context, draft, alpha) of a verify request's JSON, checked (ConfigError says what is wrong)."""
    if not isinstance(body, dict):
        raise ConfigError("a verify request is a JSON object")
    session, context, draft = body.get("session"), body.get("context"), body.get("draft")
    alpha = body.get("alpha", ALPHA)
    if not isinstance(session, str) or not 1 <= len(session) <= 64:
        raise ConfigError("session is a string of 1-64 characters")
    for name, v, hi in (("context", context, 1 << 20), ("draft", draft, K_MAX)):
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= hi:
            raise ConfigError(f"{name} is an integer 1..{hi}, not {v!r}")
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha is a number 0..1, not {alpha!r}")
    return session, int(context), int(draft), float(alpha)  # type: ignore[arg-type]
