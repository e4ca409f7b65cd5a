"""Fixtures shared by every test: root checks, eBPF nodes on a private bpffs folder, namespace hygiene."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]  # on sys.path (pyproject's pytest pythonpath): topo, tests, bench

RUN_ID = uuid.uuid4().hex[:4]
TEST_BPFFS = Path(f"/sys/fs/bpf/dinet-test-{RUN_ID}")
NS_PREFIX = f"dt{RUN_ID}"


def _have_bcc() -> bool:
    try:
        import bcc  # noqa: F401
    except ImportError:
        return False
    return True


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (bpf, XDP, namespaces)")
needs_bcc = pytest.mark.skipif(not _have_bcc(), reason="needs bcc (python3-bpfcc): run `make install`")


def bmv2_tools_or_skip() -> None:
    """Skips without p4c and simple_switch_grpc on PATH, or fails when DINET_REQUIRE_BMV2=1 (CI)."""
    missing = [t for t in ("p4c-bm2-ss", "simple_switch_grpc") if shutil.which(t) is None]
    if missing:
        msg = f"{', '.join(missing)} not on PATH (see README: P4 toolchain)"
        if os.environ.get("DINET_REQUIRE_BMV2") == "1":
            pytest.fail(msg + " and DINET_REQUIRE_BMV2=1")
        pytest.skip(msg)


def mininet_or_skip():  # type: ignore[no-untyped-def]
    """mininet.net, or a skip without Mininet (a fail under DINET_REQUIRE_BMV2=1, as in CI)."""
    try:
        import mininet.net
    except ImportError:
        msg = "Mininet (Debian's python3 package mininet) is not installed"
        if os.environ.get("DINET_REQUIRE_BMV2") == "1":
            pytest.fail(msg + " and DINET_REQUIRE_BMV2=1")
        pytest.skip(msg)
    return mininet.net


@pytest.fixture(scope="session")
def bpffs_root() -> Iterator[Path]:
    """A bpffs folder of this test run only; removed (with every map pinned in it) at the end."""
    yield TEST_BPFFS
    if TEST_BPFFS.exists():
        from dinet.targets.bcc_program import remove_pinned_tree

        remove_pinned_tree(TEST_BPFFS)


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Polls `cond` (every 2 ms) until it holds or `timeout` s pass; returns whether it held. For state another
    thread or the kernel sets (a monitor's mark, a counter): the test waits for the state, not for time."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def forget_node(name: str) -> None:
    """Removes a node's pinned maps under the default bpffs root (tests that drive the CLI or `dinet run`
    create them there), and the root itself once empty."""
    from dinet.paths import BPFFS_ROOT
    from dinet.targets.bcc_program import remove_pinned_tree

    remove_pinned_tree(BPFFS_ROOT / name)
    if BPFFS_ROOT.exists() and not any(BPFFS_ROOT.iterdir()):
        BPFFS_ROOT.rmdir()


@pytest.fixture(scope="session", autouse=True)
def machine_left_as_found() -> Iterator[None]:
    """After the run: no namespace of ours, no pinned map of ours."""
    yield
    from dinet.paths import BPFFS_ROOT

    pinned = [p.name for p in BPFFS_ROOT.iterdir() if RUN_ID in p.name] if BPFFS_ROOT.exists() else []
    for name in pinned:
        forget_node(name)
    assert not pinned, f"tests left pinned maps behind: {pinned}"
    left = [
        n
        for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
        if n.startswith(NS_PREFIX)
    ]
    for n in left:
        subprocess.run(["ip", "netns", "del", n], check=False)
    assert not left, f"tests left namespaces behind: {left}"


@pytest.fixture
def ns_prefix(request: pytest.FixtureRequest) -> str:
    """A namespace-name prefix unique to this test (names stay short: interface names are not involved)."""
    return f"{NS_PREFIX}{abs(hash(request.node.nodeid)) % 10000:04d}"


from dinet.netutil import free_port  # noqa: E402,F401 - the tests' import of it


@contextlib.contextmanager
def dinet_process(*args: str, ready: str) -> Iterator[subprocess.Popen[str]]:
    """`python -m dinet.cli ARGS` until a line starts with `ready` (it is serving then; the lines up to it
    are in `.head`); stopped
    with SIGTERM on exit, which it must survive with status 0. Stopped also when the block fails."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dinet.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        head: list[str] = []  # the lines it printed up to `ready`
        while proc.stdout and len(head) < 20:
            head.append(proc.stdout.readline())
            if head[-1].startswith(ready) or not head[-1]:
                break
        assert head and head[-1].startswith(ready), (head, proc.stderr.read() if proc.poll() is not None else "")
        proc.head = head  # type: ignore[attr-defined]
        yield proc
    finally:
        proc.terminate()
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        for f in (proc.stdout, proc.stderr):
            if f:
                f.close()
    assert code == 0, f"dinet {' '.join(args)} exited with {code}"


@dataclass(frozen=True)
class Certs:
    """Credentials made by `dinet certs` for this test run: `dir` holds the project CA and an identity each
    for a controller, a node agent, metric agents (edge, cloud) and an intruder; `other` a second CA's
    `controller`; `expired` the project CA's `controller`, expired yesterday."""

    dir: Path
    other: Path
    expired: Path

    def identity(self, name: str, where: Path | None = None):  # type: ignore[no-untyped-def]
        from dinet.creds import Identity

        return Identity.load(where or self.dir, name)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    import datetime

    from dinet.creds import issue

    base = tmp_path_factory.mktemp("certs")
    good, other, expired = base / "project", base / "other", base / "expired"

    def cli(*args: str) -> None:
        subprocess.run([sys.executable, "-m", "dinet.cli", "certs", *args], check=True, capture_output=True)

    cli("init", str(good))
    for name in ("controller", "agent", "collector", "edge", "cloud", "intruder"):
        cli("issue", name, "--dir", str(good))
    cli("init", str(other))
    cli("issue", "controller", "--dir", str(other))
    expired.mkdir()
    for f in ("ca.crt", "ca.key"):
        shutil.copy(good / f, expired / f)
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=3)
    issue(expired, "controller", days=2, not_before=past)
    return Certs(good, other, expired)
