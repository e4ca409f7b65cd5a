"""Large-small collaboration as a cascade (draft-song s4.4; AI Flow's near-cloud quality at lower latency): a
small model answers, and escalates a request to a large model through the network when its confidence is
below a threshold; the network picks the large instance (a service VIP).

What is real: the small model's `dinet serve` computing the prompt and its first token (the confidence is read
there, before the answer is streamed), the escalation as a request to the VIP over its own flow, the large
instance's engine, the bytes. What is a model: how hard a request is and how confident the small model is
about it. A request's difficulty d is uniform on 0..1 (seeded by the request); a model of relative quality q
(the profile's `quality`, the large model's being the reference) answers it at the large model's level iff
d <= q_small / q_large; the small model's confidence is 1 - d plus Gaussian noise (sigma `noise`, default
0.1: a small model that roughly knows what it does not know). So the share of requests answered at the large
model's level, and the share escalated, follow from the threshold: `escalated()` and `at_large_level()`."""

from __future__ import annotations

import random

from ..errors import ConfigError

THRESHOLD = 0.6  # escalate below this confidence
NOISE = 0.1


def difficulty(request: str) -> float:
    return random.Random(f"difficulty:{request}").random()


def confidence(request: str, noise: float = NOISE) -> float:
    """The small model's confidence in its answer to `request`, 0..1."""
    rng = random.Random(f"confidence:{request}")
    return min(1.0, max(0.0, 1.0 - difficulty(request) + rng.gauss(0.0, noise)))


def at_large_level(request: str, q_small: float, q_large: float, escalated: bool) -> bool:
    """Whether the answer the client got is as good as the large model's."""
    if q_large <= 0:
        raise ConfigError("the large model's quality is positive")
    return escalated or difficulty(request) <= min(1.0, q_small / q_large)


def check_threshold(threshold: float) -> float:
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"a confidence threshold is 0..1, not {threshold}")
    return threshold
