"""The `dinet` command line: tables written and read back, errors as one line and exit status 1."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from conftest import RUN_ID, forget_node, needs_bcc, needs_root

pytestmark = [needs_root, needs_bcc]


def dinet(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, "-m", "dinet.cli", *args], capture_output=True, text=True)
    if ok:
        assert res.returncode == 0, res.stderr
    return res


@pytest.fixture
def node() -> Iterator[str]:
    name = f"clitest{RUN_ID}"
    yield name
    forget_node(name)


def test_steering_tables_through_the_cli(node: str) -> None:
    svc = "10.77.0.1:443/tcp"
    dinet("xdp", "attach", "--dev", "lo", "--mode", "generic", "--node", node, "--src4", "192.0.2.1")
    try:
        dinet("service", "add", svc, "--node", node)
        dinet("instance", "set", svc, "--id", "7", "--endpoint", "192.0.2.7", "--weight", "3", "--node", node)
        dinet("instance", "set", svc, "--id", "8", "--endpoint", "192.0.2.8", "--node", node)
        dinet("instance", "drain", svc, "--id", "8", "--node", node)
        listed = json.loads(dinet("service", "list", "--json", "--node", node).stdout)
        assert listed[0]["service"] == svc
        assert {(i["instance_id"], i["weight"], i["state"]) for i in listed[0]["instances"]} == {
            (7, 3, "up"),
            (8, 1, "draining"),
        }
        assert listed[0]["placement"] == "flow"
        dinet("service", "add", svc, "--session", "--node", node)  # the same service, now session-affine
        listed = json.loads(dinet("service", "list", "--json", "--node", node).stdout)
        assert listed[0]["placement"] == "session" and len(listed[0]["instances"]) == 2
        stats = json.loads(dinet("stats", "--json", "--node", node).stdout)
        assert stats["services"][0]["packets"] == 0 and "drop_malformed" in stats["verdicts"]
        bad = dinet("instance", "weight", svc, "--id", "9", "--weight", "1", "--node", node, ok=False)
        assert bad.returncode == 1 and bad.stderr.strip() == f"dinet: {svc} has no instance 9"
        bad = dinet("service", "add", "10.77.0.1:99999/tcp", "--node", node, ok=False)
        assert bad.returncode == 1 and "port must be 1-65535" in bad.stderr and "Traceback" not in bad.stderr
        bad = dinet("xdp", "attach", "--dev", "nosuch0", "--node", node, ok=False)
        assert bad.returncode == 1 and "no interface 'nosuch0'" in bad.stderr
    finally:
        dinet("xdp", "detach", "--dev", "lo", "--mode", "generic")


def test_bier_tables_through_the_cli(node: str) -> None:
    dinet(
        "bier",
        "bift",
        "set",
        "--bsl",
        "128",
        "--si",
        "1",
        "--local",
        "130",
        "--nbr",
        "lo,02:00:00:00:00:02,129,131-132",
        "--node",
        node,
    )
    shown = json.loads(dinet("bier", "bift", "show", "--json", "--node", node).stdout)
    assert shown == [
        {
            "bift_id": 0x20001,
            "bsl": 128,
            "sd": 0,
            "si": 1,
            "local": [130],
            "neighbors": [{"ifindex": 1, "dmac": "02:00:00:00:00:02", "bfr_ids": [129, 131, 132]}],
        }
    ]
    dinet(
        "bier", "group", "add", "10.200.0.1", "--udp-port", "9000", "--to", "1-3,65", "--bfir-id", "5", "--node", node
    )
    groups = json.loads(dinet("bier", "group", "list", "--json", "--node", node).stdout)
    assert {(g["si"], g["bitmask"]) for g in groups} == {(0, "0x7"), (1, "0x1")}
    bad = dinet("bier", "bift", "set", "--bsl", "512", "--node", node, ok=False)
    assert bad.returncode == 1 and "forwards BSL 64, 128 and 256" in bad.stderr
    bad = dinet(
        "bier",
        "group",
        "add",
        "10.200.0.1",
        "--src",
        "fd00::1",
        "--to",
        "1",
        "--bfir-id",
        "5",
        "--node",
        node,
        ok=False,
    )
    assert bad.returncode == 1 and "different families" in bad.stderr


def _bad_inputs(node: str) -> list[tuple[str, ...]]:
    """Every subcommand with input a user gets wrong: a missing node or table, a malformed value, a file or
    switch that is not there."""
    svc = "10.77.0.9:80/tcp"
    n = ("--node", node)
    return [
        ("xdp", "attach", "--dev", "no-such-if0", *n),
        ("xdp", "attach", "--dev", "lo", "--src4", "2001:db8::1", *n),
        ("xdp", "detach", "--dev", "no-such-if0", *n),
        ("decap", "attach", "--dev", "lo", "--endpoint", "not-an-ip", *n),
        ("service", "add", "10.0.0.1:80/sctp", *n),
        ("service", "del", svc, *n),
        ("instance", "set", svc, "--id", "1", "--endpoint", "192.0.2.1", *n),
        ("instance", "set", "10.77.0.1", "--id", "1", "--endpoint", "192.0.2.1", *n),
        ("instance", "weight", svc, "--id", "1", "--weight", "1", *n),
        ("instance", "drain", svc, "--id", "1", *n),
        ("instance", "state", svc, "--id", "1", "sleepy", *n),
        ("instance", "del", svc, "--id", "1", *n),
        ("bier", "attach", "--dev", "no-such-if0", *n),
        ("bier", "detach", "--dev", "no-such-if0", *n),
        ("bier", "bift", "set", "--bsl", "63", "--local", "1", *n),
        ("bier", "bift", "set", "--nbr", "lo,zz:zz,1", *n),
        ("bier", "bift", "del", "--si", "3", *n),
        ("bier", "group", "add", "10.200.0.1", "--to", "1-x", "--bfir-id", "1", *n),
        ("bier", "group", "add", "not-an-ip", "--to", "1", "--bfir-id", "1", *n),
        ("bier", "group", "del", "10.200.0.9", *n),
        ("run", "/nonexistent/intent.yaml"),
        ("run", "--check", "/nonexistent/intent.yaml"),
        ("p4", "read", "--address", "unix:/nonexistent/p4rt.sock", "--table", "ring"),
        ("agent", "--listen", "256.0.0.1:1", "--insecure", *n),
        ("agent", "--listen", "127.0.0.1:0", *n),  # no credentials and not --insecure
        ("agent", "--listen", "127.0.0.1:0", "--insecure", *n),  # without TLS and without a token: anyone
        ("agent", "--certs", "/nonexistent", "--identity", "x", *n),
        ("certs", "issue", "host1", "--dir", "/nonexistent/pki"),
        ("certs", "issue", "bad name", "--dir", "/nonexistent/pki"),
        ("status", "--url", "http://127.0.0.1:1/metrics"),
    ]


def test_every_subcommand_answers_bad_input_with_one_line(node: str) -> None:
    """No traceback for a user's error, from any subcommand: one line naming what is wrong, exit 1 (argparse's
    own usage errors exit 2)."""
    from concurrent.futures import ThreadPoolExecutor

    cases = _bad_inputs(node)
    with ThreadPoolExecutor(max_workers=4) as pool:  # each a process of its own that fails early: side by side
        results = list(pool.map(lambda args: dinet(*args, ok=False), cases))
    for args, res in zip(cases, results, strict=True):
        assert res.returncode in (1, 2), f"{args}: exit {res.returncode}: {res.stderr}"
        assert "Traceback" not in res.stderr and "internal error" not in res.stderr, f"{args}: {res.stderr}"
        # one line of error; --insecure's own warning may stand before it
        lines = [x for x in res.stderr.splitlines() if x.strip() and not x.startswith(("usage:", " ", "WARNING"))]
        assert len(lines) == 1 and lines[0].startswith("dinet"), f"{args}: {res.stderr!r}"


def test_experiment_modelsync_reports_the_benchmarks_figures(tmp_path) -> None:
    """`dinet experiment modelsync` runs bench/modelsync.py; its report draws the benchmark's figures."""
    from dinet.experiments.common import Results
    from dinet.experiments.modelsync import report

    rows = [
        {
            "method": m,
            "n": n,
            "completion_s": 1.0 + k,
            "uplink_bytes": (k + 1) << 20,
            "total_bytes": 0,
            "bytes_identical": True,
        }
        for k, m in enumerate(("bier", "ingress", "unicast"))
        for n in (2, 4)
    ]
    res = Results(tmp_path / "modelsync")
    page = report(res, {"rows": rows, "size_bytes": 64 << 20, "link_mbit": 200.0}, tmp_path / "none.yaml").read_text()
    assert (res.folder / "modelsync.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'src="modelsync.png"' in page and page.count("<td>bier</td>") == 2
    res = dinet("experiment", "nothing", ok=False)
    assert res.returncode == 2 and "invalid choice" in res.stderr
    res = dinet("experiment", "steering", "--repeats", "0", ok=False)
    assert res.returncode == 1 and "--repeats is at least 1" in res.stderr
