"""Model synchronisation over BIER, end to end in a namespace domain of three levels (eight GPU clouds, a
repository behind the BFIR): UFTP carried by the eBPF BIER data plane, `dinet sync-receiver` processes in
the clouds, every copy checked byte for byte. Loss comes from ebpf/loss.bpf.c (this kernel has no netem)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import NS_PREFIX, needs_bcc, needs_root
from dinet.errors import ConfigError
from dinet.lab.bier_domain import tree
from dinet.lab.loss import LinkLoss
from dinet.lab.model_sync import SyncLab
from dinet.sync.job import SyncReport
from dinet.sync.uftp import UftpOptions, parse_sender

pytestmark = [
    needs_root,
    needs_bcc,
    pytest.mark.skipif(shutil.which("uftp") is None, reason="needs Debian's uftp (make install)"),
]

MiB = 1 << 20


@pytest.fixture(scope="module")
def lab(bpffs_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncLab]:
    root = tmp_path_factory.mktemp("sync")
    with SyncLab(f"{NS_PREFIX}ms", tree(redundant=True), root / "clouds", bpffs_root=bpffs_root) as lab:
        yield lab


@pytest.fixture
def model(tmp_path: Path) -> Callable[[int], Path]:
    def make(mib: int) -> Path:
        path = tmp_path / f"model-{mib}m-{os.urandom(3).hex()}.bin"
        with path.open("wb") as f:
            for _ in range(mib):
                f.write(os.urandom(MiB))
        return path

    return make


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def received(lab: SyncLab, cloud: str, file: Path) -> Path:
    return lab.store(cloud) / file.name


def in_background(job_run: Callable[[], SyncReport]) -> tuple[threading.Thread, list[SyncReport]]:
    out: list[SyncReport] = []
    t = threading.Thread(target=lambda: out.append(job_run()))
    t.start()
    return t, out


def wait_receiving(lab: SyncLab, cloud: str, at_least: int, job: threading.Thread) -> Path:
    """The temp file `cloud` is receiving into, once it holds at least `at_least` bytes."""
    tmp = lab.store(cloud) / ".dinet-sync" / "tmp"
    while job.is_alive():
        for p in tmp.rglob("*"):
            if p.is_file() and not p.name.startswith("_group_") and p.stat().st_blocks * 512 >= at_least:
                return p
        time.sleep(0.02)
    pytest.fail(f"the job ended before {cloud} had received {at_least} bytes")


def test_sync_to_four_clouds_is_byte_identical_and_leaves_no_bier_entry(lab: SyncLab, model) -> None:
    src = model(16)
    bfir = lab.domain.nodes[lab.domain.bfir]
    report = lab.job(src, ["e1", "e3", "e6", "e8"], progress=False).run()
    assert report.ok, report.table()
    assert [c.status for c in report.clouds] == ["verified"] * 4
    for name in ("e1", "e3", "e6", "e8"):
        assert digest(received(lab, name, src)) == digest(src)
    for name in ("e2", "e4", "e5", "e7"):  # not named: nothing arrives there
        assert not received(lab, name, src).exists()
    assert report.passes >= 1 and report.first_data_ms is not None and report.setup_ms > 0
    assert bfir.bfir_entries() == {}  # both groups of the job are gone from the BFIR


def test_five_percent_loss_toward_one_cloud_is_repaired(lab: SyncLab, model) -> None:
    src = model(8)
    leaf_if = lab.domain.ifname[("e2", "n1")]
    with LinkLoss(leaf_if, lab.domain.net.ns("e2"), 0.05, hook="ingress") as loss:
        report = lab.job(src, ["e2", "e4"], progress=False).run()
        passed, dropped = loss.counts()
    assert report.ok, report.table()
    assert dropped > 0.02 * (passed + dropped)  # the link really lost packets
    by = {c.name: c for c in report.clouds}
    assert by["e2"].naks > 0  # repaired by UFTP's NAKs (e4 may NAK too on a busy machine: no loss there is asserted)
    assert digest(received(lab, "e2", src)) == digest(src)


def test_a_receiver_restarted_mid_transfer_resumes(lab: SyncLab, model) -> None:
    src = model(24)
    job = lab.job(src, ["e5", "e6"], opts=UftpOptions(rate_mbps=40), progress=False)
    t, out = in_background(job.run)
    try:
        wait_receiving(lab, "e6", 4 * MiB, t)
        lab.stop_receiver("e6")  # SIGTERM: uftpd stops mid-session
        lab.start_receiver("e6")
    finally:
        t.join()
    report = out[0]
    assert report.ok, report.table()
    assert report.restarts >= 1  # UFTP's restart of the session for the receiver that dropped out
    assert digest(received(lab, "e6", src)) == digest(src)
    assert digest(received(lab, "e5", src)) == digest(src)


def test_a_link_failure_mid_transfer_completes(lab: SyncLab, model) -> None:
    src = model(24)
    ctl = lab.domain.ctl()
    stop = threading.Event()
    watcher = threading.Thread(target=ctl.watch, args=(0.1, stop), daemon=True)
    watcher.start()
    job = lab.job(src, ["e1", "e2", "e7"], opts=UftpOptions(rate_mbps=60), progress=False)
    t, out = in_background(job.run)
    try:
        wait_receiving(lab, "e1", 4 * MiB, t)
        lab.domain.fail_link("m1", "n1")  # e1 and e2 are reached through n2 from now on
    finally:
        t.join()
        stop.set()
        watcher.join()
    try:
        report = out[0]
        assert report.ok, report.table()
        assert any(frozenset(("m1", "n1")) in h.down_links for h in ctl.history)
        for name in ("e1", "e2", "e7"):
            assert digest(received(lab, name, src)) == digest(src)
    finally:
        lab.domain.restore_link("m1", "n1")
        ctl.link_up("m1", "n1")


def test_a_copy_corrupted_on_disk_is_detected(lab: SyncLab, model) -> None:
    src = model(16)
    job = lab.job(src, ["e3", "e4"], opts=UftpOptions(rate_mbps=40), progress=False)
    t, out = in_background(job.run)
    try:
        tmp = wait_receiving(lab, "e4", 2 * MiB, t)
        with tmp.open("r+b") as f:  # a chunk already written changes under the receiver
            f.write(b"\0" * 4096)
    finally:
        t.join()
    by = {c.name: c for c in out[0].clouds}
    assert by["e3"].status == "verified"
    assert by["e4"].status == "hash mismatch"
    assert not out[0].ok


def test_a_cloud_that_never_answers_does_not_hold_the_others(lab: SyncLab, model) -> None:
    src = model(4)
    lab.stop_receiver("e8", kill=True)
    try:
        report = lab.job(src, ["e7", "e8"], progress=False).run()
    finally:
        lab.start_receiver("e8")
    by = {c.name: c for c in report.clouds}
    assert by["e7"].status == "verified"
    assert by["e8"].status.startswith("failed") and "does not answer" in by["e8"].status
    assert not report.ok


def test_errors_are_one_clear_line(lab: SyncLab, model, tmp_path: Path) -> None:
    src = model(1)
    with pytest.raises(ConfigError, match="unknown destination.*cloud9"):
        lab.job(src, ["e1", "cloud9"], progress=False).run()
    with pytest.raises(ConfigError, match="no file"):
        lab.job(tmp_path / "missing.bin", ["e1"], progress=False).run()
    job = lab.job(src, ["e1"], progress=False)
    job.token = ""
    with pytest.raises(ConfigError, match="no credentials"):
        job.run()
    job.token = "wrong"
    with pytest.raises(ConfigError, match="refused the token"):
        job.run()
    ctl = lab.domain.ctl()
    ctl.link_down("n4", "e8")  # e8's only link
    try:
        with pytest.raises(ConfigError, match="no BIER path from r to e8"):
            lab.job(src, ["e7", "e8"], progress=False).run()
    finally:
        ctl.link_up("n4", "e8")
    store = lab.store("e5")  # a 1 MiB store (mounted before the receiver starts: it has a mount namespace)
    lab.stop_receiver("e5")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(store)], check=True)
    try:
        lab.start_receiver("e5")
        with pytest.raises(ConfigError, match="disk full at e5"):
            lab.job(model(2), ["e5"], progress=False).run()
    finally:
        lab.stop_receiver("e5")
        subprocess.run(["umount", str(store)], check=True)
        lab.start_receiver("e5")
    assert lab.domain.nodes[lab.domain.bfir].bfir_entries() == {}


def test_a_file_changed_during_the_send_is_reported(lab: SyncLab, model) -> None:
    src = model(16)
    job = lab.job(src, ["e1"], opts=UftpOptions(rate_mbps=40), progress=False)
    t, out = in_background(job.run)
    try:
        wait_receiving(lab, "e1", 2 * MiB, t)
        with src.open("ab") as f:
            f.write(b"appended")
    finally:
        t.join()
    assert "changed during the send" in out[0].error and not out[0].ok


def test_parse_sender_reads_uftp_status_and_log() -> None:
    status = (
        "CONNECT;success;0x00000001\nCONNECT;failed;0x00000002\n"
        "RESULT;0x00000001;model.bin;32768KB;copy;11769.70KB/s\nRESULT;0x00000003;model.bin;32768KB;lost;\n"
        "STATS;0x00000001;1;0;0;32MB;2.784;11769.70KB/s\n"
    )
    log = (
        "2026/11/27 17:27:09.104060: [A3C7ABA6/00:0001]: Starting pass 1\n"
        "2026/11/27 17:27:10.1: [A3C7ABA6/00:0001]: Got 439 NAKs for section 0 from client 0x00000001\n"
        "2026/11/27 17:27:11.1: [A3C7ABA6/00:0001]: Starting pass 2\n"
    )
    rep = parse_sender(status, log)
    assert rep.passes == 2 and rep.first_data_at == "2026/11/27 17:27:09.104060"
    c1, c2, c3 = (rep.clients[f"0x0000000{i}"] for i in (1, 2, 3))
    assert (c1.connected, c1.status, c1.ok, c1.kbytes, c1.seconds, c1.naks) == (True, "copy", True, 32768, 2.784, 439)
    assert (c2.connected, c2.ok) == (False, False)
    assert (c3.status, c3.ok) == ("lost", False)


def test_dinet_sync_cli_pushes_through_the_intents_domain(lab: SyncLab, model, tmp_path: Path) -> None:
    import json
    import sys

    import yaml

    src = model(4)
    intent = tmp_path / "intent.yaml"
    intent.write_text(yaml.safe_dump(lab.intent()))
    argv = [sys.executable, "-m", "dinet.cli", "sync", str(src), "--to", "e2,e5", "--intent", str(intent)]
    argv += ["--bfir", "r", "--interface", "eth0", "--netns", lab.domain.net.ns("src"), "--json", "--quiet"]
    argv += ["--token-file", str(lab.root / "token"), "--key", str(lab.key), "--ca", lab.ca]
    env = {**os.environ, "DINET_BPFFS_ROOT": str(lab.domain.bpffs_root)}
    res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["ok"] and [c["status"] for c in out["clouds"]] == ["verified", "verified"]
    assert digest(received(lab, "e5", src)) == digest(src)
    assert lab.domain.nodes["r"].bfir_entries() == {}
    # the tree baseline through the same command: the same file to e2 and e5 on SR-P2MP trees, torn down after
    src2 = model(2)
    argv2 = [*argv[:4], str(src2), *argv[5:], "--tree"]
    res = subprocess.run(argv2, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["ok"] and [c["status"] for c in out["clouds"]] == ["verified", "verified"]
    assert digest(received(lab, "e2", src2)) == digest(src2) and digest(received(lab, "e5", src2)) == digest(src2)
    assert lab.domain.nodes["r"].bfir_entries() == {} and lab.domain.nodes["r"].tree_roots() == {}
    assert all(node.tree_segments() == {} for node in lab.domain.nodes.values())
    bad = subprocess.run(argv[:6] + ["e2,e9"] + argv[7:], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode != 0 and "no receiver for e9" in bad.stderr and "Traceback" not in bad.stderr


def test_the_receiver_answers_for_its_own_files_only_never_through_a_link(tmp_path: Path) -> None:
    """A link in the store (to /etc/shadow, or to a file elsewhere) is no model: 404, and nothing is read
    through it; the store's own file is hashed."""
    import asyncio
    import hashlib

    from aiohttp.test_utils import TestClient, TestServer

    from dinet.sync.receiver import SyncReceiver, sha256_of

    store = tmp_path / "store"
    store.mkdir()
    (store / "model.bin").write_bytes(b"weights")
    outside = tmp_path / "secret"
    outside.write_bytes(b"not yours")
    (store / "leak.bin").symlink_to(outside)
    rx = SyncReceiver(store=store, interfaces=[], client_id="1", token="t")

    async def ask() -> tuple[int, dict, int]:
        async with TestClient(TestServer(rx.app())) as c:
            hdr = {"Authorization": "Bearer t"}
            ok = await c.get("/sync/v1/files/model.bin", headers=hdr)
            bad = await c.get("/sync/v1/files/leak.bin", headers=hdr)
            return ok.status, await ok.json(), bad.status

    status, body, leak = asyncio.run(ask())
    assert status == 200 and body["sha256"] == hashlib.sha256(b"weights").hexdigest() and leak == 404
    with pytest.raises(OSError):
        sha256_of(store / "leak.bin")


def test_receivers_take_files_from_their_pinned_sender_only(lab: SyncLab, model, tmp_path: Path) -> None:
    """Every receiver pins the repository's UFTP key: a job with another key is refused before it sends (the
    receivers say whom they pin), and a sender that claims the pinned key but holds another is refused by
    uftpd itself: nothing reaches the store. The pinned key goes through."""
    from dinet.sync import job as job_mod
    from dinet.sync.uftp import fingerprint, make_key

    src = model(1)
    other = tmp_path / "other.key"
    make_key(other)
    refused = lab.job(src, ["e1", "e2"], opts=UftpOptions(rate_mbps=40, key=other), progress=False).run()
    assert not refused.ok and all("pinned senders only" in c.status for c in refused.clouds), refused.table()
    pinned = fingerprint(lab.key)
    job = lab.job(src, ["e3"], opts=UftpOptions(rate_mbps=40, key=other), progress=False, retries=0)
    job.receiver_wait_s = 1.0
    real = job_mod.fingerprint
    job_mod.fingerprint = lambda key: pinned  # the job believes it holds the pinned key
    try:
        forged = job.run()
    finally:
        job_mod.fingerprint = real
    assert not forged.ok and forged.clouds[0].status.startswith("failed"), forged.table()
    assert not received(lab, "e3", src).exists()
    ok = lab.job(src, ["e3"], progress=False).run()
    assert ok.ok and digest(received(lab, "e3", src)) == digest(src)


def test_the_receivers_status_is_https_with_the_project_ca(lab: SyncLab, model) -> None:
    """The token and the status cross the network over TLS: a job that does not trust the project CA is
    one clear error, and so is one that speaks HTTP to an HTTPS receiver."""
    src = model(1)
    with pytest.raises(ConfigError, match="certificate this job does not trust"):
        lab.job(src, ["e1"], ca=None, progress=False).run()
    clear = lab.job(src, ["e1"], progress=False)
    clear.tls = False
    rep = clear.run()
    assert not rep.ok and "does not answer" in rep.clouds[0].status


def test_a_receiver_without_pinned_senders_or_tls_refuses_to_start(tmp_path: Path) -> None:
    import sys

    from dinet.sync.uftp import read_servers

    base = [sys.executable, "-m", "dinet.cli", "sync-receiver", "--store", str(tmp_path), "--interfaces", "lo"]
    base += ["--bfr-id", "3", "--listen", "127.0.0.1:0"]
    env = {**os.environ, "DINET_TOKEN": "t"}
    for extra, want in (
        ([], "over HTTPS"),
        (["--insecure"], "pinned senders only"),
        (["--insecure", "--servers", str(tmp_path / "none")], "cannot be read"),
    ):
        res = subprocess.run(base + extra, capture_output=True, text=True, env=env, timeout=30)
        assert res.returncode != 0 and want in res.stderr and "Traceback" not in res.stderr, (extra, res.stderr)
    key = tmp_path / "repo.key"
    line = subprocess.run(
        [sys.executable, "-m", "dinet.cli", "sync-pin", str(key), "--address", "10.50.0.2", "--new"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert line.startswith("0x0A320002|10.50.0.2|") and os.stat(key).st_mode & 0o077 == 0
    servers = tmp_path / "servers"
    servers.write_text(f"# the repository\n{line}\n")
    assert read_servers(servers)[0]["address"] == "10.50.0.2"
    servers.write_text(f"{line}\n0x1|10.0.0.1\n")
    with pytest.raises(ConfigError, match="servers:2: not ID"):
        read_servers(servers)
