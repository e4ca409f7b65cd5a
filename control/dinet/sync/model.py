"""A model of model synchronisation at the seeds' scale, calibrated on emulated runs (bench/modelsync.py), that
answers draft-liu-rtgwg-llmsync-multicast's question where no lab reaches: how long, and how many bytes on the
repository's uplink, to push a 70 GB or 1 TB model to 10, 50 or 100 GPU clouds by BIER, by a tree (SR-P2MP),
by ingress replication and by HTTP. Pure: numpy and scipy, no network.

Per method, the slowest cloud is done after

    T(N, S, R) = a + b x N + max(copies(N) x 8 S / (e x R), c x N x S)

a: what every job pays once (UFTP's announce and completion rounds, a server's start); b: what each
destination adds (its registration, a stream's slow start); e: the share of the link rate the data moves at;
copies: what the repository's uplink carries, 1 for BIER and a tree (the network replicates), N for ingress
replication and HTTP (the uplink carries every copy); c: the emulation's own limit, every receiver's work on
the lab machine's shared cores (N receivers decrypting S each: seconds per cloud and byte), which a
replicated transfer meets first (its network time does not grow with N). The uplink's bytes are
copies x S x (1 + h), h the headers' share. a, b, 1/e and c come from least squares (non-negative) over the
emulated rows of each method (two sizes at least, so that a and e are told apart), h from the rows' uplink
counters. The draft's answer leaves c out: a cloud's receiver runs on its own machine. Under loss p on a
receiver's link, BIER's repairs add about k x p x S to the uplink (k fitted from the loss rows).

What it assumes beyond the emulation: the sender keeps up with the link (the emulation's UFTP is bound by two
cores at 200 Mbit/s; a production sender at 100 Gbit/s is not UFTP in Python's shadow, and the efficiency e
is the protocol's, measured where the CPU was not the limit); the uplink is the bottleneck (the repository's
link, as in draft-liu's picture: the transit links are as fast); a tree carries what BIER carries over the same
links (both follow the IGP's shortest paths) and pays its per-job set-up: writing its replication segments
(dinet.policy.p2mp counts them) at a measured write rate."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import least_squares, nnls

from ..errors import ConfigError

REPLICATED = ("bier", "tree")  # the network makes the copies: one on the uplink
METHODS = ("bier", "tree", "ingress", "unicast")


@dataclass(frozen=True)
class MethodFit:
    method: str
    fixed_s: float  # a
    per_cloud_s: float  # b
    efficiency: float  # e
    header_share: float  # h
    rows: int  # emulated rows it was fitted on
    shared_cpu_s_per_cloud_byte: float = 0.0  # c: the emulation's receivers on its shared cores


def copies(method: str, n: int) -> int:
    return 1 if method in REPLICATED else n


def _data_s(method: str, n: int, size_bytes: float, link_mbit: float) -> float:
    return copies(method, n) * size_bytes * 8 / (link_mbit * 1e6)


def fit(rows: Iterable[Mapping[str, Any]], link_mbit: float) -> dict[str, MethodFit]:
    """Each emulated method's parameters from its rows ({method, n, size_bytes, completion_s, uplink_bytes})."""
    out = {}
    by: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["method"], []).append(r)
    for method, rs in by.items():
        if len({r["size_bytes"] for r in rs}) < 2 or len(rs) < 3:
            raise ConfigError(f"{method}: a fit needs rows of two sizes at least ({len(rs)} rows)")
        n = np.array([float(r["n"]) for r in rs])
        size = np.array([float(r["size_bytes"]) for r in rs])
        data = np.array([_data_s(method, r["n"], r["size_bytes"], link_mbit) for r in rs])
        y = np.array([r["completion_s"] for r in rs])
        (a, b, inv_e), _ = nnls(np.column_stack([np.ones_like(n), n, data]), y)  # the network's part alone
        c = 0.0
        if method in REPLICATED:  # the receivers' shared CPU may bound it instead (the max of two)
            best = None
            for c0 in (0.0, float(np.max(y / (n * size)))):  # from the network alone, and from the CPU alone
                res = least_squares(
                    _replicated, np.array([a, b, inv_e, c0]), bounds=(0.0, np.inf), args=(n, data, size, y)
                )
                if best is None or res.cost < best.cost:
                    best = res
            a, b, inv_e, c = (float(v) for v in best.x)  # type: ignore[union-attr]
        h = float(np.mean([r["uplink_bytes"] / (copies(method, r["n"]) * r["size_bytes"]) - 1 for r in rs]))
        e = 1.0 / inv_e if inv_e > 0 else float("inf")
        out[method] = MethodFit(method, float(a), float(b), e, h, len(rs), c)
    return out


def _replicated(p: np.ndarray, n: np.ndarray, data: np.ndarray, size: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A replicated method's residuals: a + b N + max(data / e, c N S) - measured."""
    return p[0] + p[1] * n + np.maximum(p[2] * data, p[3] * n * size) - y


def predict(f: MethodFit, n: int, size_bytes: float, link_mbit: float, emulated: bool = False) -> tuple[float, float]:
    """(seconds until the slowest cloud is done, bytes on the repository's uplink). emulated: with the lab's
    shared-CPU limit (to compare with emulated runs); without it, receivers on machines of their own."""
    data = _data_s(f.method, n, size_bytes, link_mbit) / f.efficiency
    if emulated:
        data = max(data, f.shared_cpu_s_per_cloud_byte * n * size_bytes)
    return f.fixed_s + f.per_cloud_s * n + data, copies(f.method, n) * size_bytes * (1 + f.header_share)


def errors(fits: Mapping[str, MethodFit], rows: Iterable[Mapping[str, Any]], link_mbit: float) -> list[dict]:
    """The model against rows it was not fitted on: predicted and measured time, relative error."""
    out = []
    for r in rows:
        f = fits.get(r["method"])
        if f is None:
            continue
        t, up = predict(f, r["n"], r["size_bytes"], link_mbit, emulated=True)
        out.append(
            {
                "method": r["method"],
                "n": r["n"],
                "size_bytes": r["size_bytes"],
                "measured_s": r["completion_s"],
                "predicted_s": round(t, 3),
                "error": round((t - r["completion_s"]) / r["completion_s"], 3),
                "uplink_error": round((up - r["uplink_bytes"]) / r["uplink_bytes"], 3),
            }
        )
    return out


def with_tree(fits: dict[str, MethodFit], setup_s: float = 0.0) -> dict[str, MethodFit]:
    """A tree's fit: BIER's over the same links, plus its per-job set-up (writing its segments)."""
    b = fits["bier"]
    tree = MethodFit("tree", b.fixed_s + setup_s, b.per_cloud_s, b.efficiency, b.header_share, 0)
    return fits | {"tree": tree}


def loss_repairs(rows: Iterable[Mapping[str, Any]], clean_uplink: float) -> float:
    """k in extra uplink bytes = k x loss x size, from BIER runs under loss and the same size without it."""
    ks = [
        (r["uplink_bytes"] - clean_uplink) / (r["loss"] * r["size_bytes"])
        for r in rows
        if r.get("loss") and r["uplink_bytes"] > clean_uplink
    ]
    return float(np.median(ks)) if ks else 0.0


def draft_table(
    fits: Mapping[str, MethodFit],
    sizes_gb: Iterable[float] = (70, 1000),
    clouds: Iterable[int] = (10, 50, 100),
    link_gbit: Iterable[float] = (10, 100, 400),
    tree_setup_s: Mapping[int, float] | None = None,
) -> list[dict[str, Any]]:
    """Time and uplink bytes per method for the draft's sizes and cloud counts, at each link rate."""
    out = []
    for gb in sizes_gb:
        for n in clouds:
            for g in link_gbit:
                row: dict[str, Any] = {"size_gb": gb, "clouds": n, "link_gbit": g}
                for m in METHODS:
                    f = fits.get(m)
                    if f is None:
                        continue
                    t, up = predict(f, n, gb * 1e9, g * 1000)
                    if m == "tree" and tree_setup_s:
                        t += tree_setup_s.get(n, 0.0)
                    row[m] = {"s": round(t, 1), "uplink_gb": round(up / 1e9, 1)}
                out.append(row)
    return out


def as_json(fits: Mapping[str, MethodFit]) -> dict[str, Any]:
    return {m: asdict(f) for m, f in fits.items()}
