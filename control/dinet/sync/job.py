"""One model-sync job: a file from the repository to a set of GPU clouds over the BIER domain.

    job = SyncJob(controller, "repo-bfir", Path("llama-70b.safetensors"), [Cloud("cloud1", "10.60.0.9:9444")],
                  interface="eth0", token=token)
    report = job.run()      # report.ok, report.table(), report.to_json()

The job opens two BIER groups at the BFIR (UFTP's announce group and a private data group, UDP port
UFTP's) whose bitstring names exactly the job's BFERs, runs uftp (closed group: only those receivers), lets
UFTP restart the receivers that dropped out, checks every copy's SHA-256 against the repository's, and
closes the groups whatever happens. A new destination set is a new bitstring: nothing else to build."""

from __future__ import annotations

import json
import logging
import random
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DinetError
from ..policy.bift import BierGroup
from ..services.bier import BierController
from ..services.trees import TreeController, TreeJob
from ..targets import netns as ns_mod
from .receiver import sha256_of
from .uftp import SenderReport, UftpOptions, fingerprint, parse_sender, sender_argv, uid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cloud:
    name: str  # its BFER in the domain
    receiver: str  # HOST:PORT of its dinet sync-receiver


@dataclass
class CloudResult:
    name: str
    bfr_id: int
    status: str  # verified | hash mismatch | failed: REASON
    bytes: int = 0
    seconds: float = 0.0
    goodput_mbps: float = 0.0
    naks: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "verified"


@dataclass
class SyncReport:
    file: str
    size: int
    sha256: str
    clouds: list[CloudResult] = field(default_factory=list)
    setup_ms: float = 0.0  # the command's start to the BIER groups (or the trees) written
    setup_entries: int = 0  # entries written in the network to set the job up (its state there)
    write_ms: float = 0.0  # the time those writes took (setup_ms also holds the receivers' checks)
    first_data_ms: float | None = None  # the command's start to the first data pass (UFTP's handshake included)
    seconds: float = 0.0
    passes: int = 0
    restarts: int = 0
    error: str = ""
    logs: str = ""  # where UFTP's logs were kept (a failed job without a workdir)

    @property
    def ok(self) -> bool:
        return not self.error and all(c.ok for c in self.clouds)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def table(self) -> str:
        rows = [("cloud", "BFR-id", "bytes", "time s", "goodput Mb/s", "NAKs", "result")]
        for c in self.clouds:
            rows.append(
                (
                    c.name,
                    str(c.bfr_id),
                    str(c.bytes),
                    f"{c.seconds:.2f}",
                    f"{c.goodput_mbps:.1f}",
                    f"{c.naks}",
                    c.status,
                )
            )
        width = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, width, strict=True)).rstrip() for r in rows]
        first = f"{self.first_data_ms:.0f} ms" if self.first_data_ms is not None else "-"
        lines.append(
            f"{self.file}: {self.size} bytes, sha256 {self.sha256[:16]}..., groups set up in "
            f"{self.setup_ms:.1f} ms, first data after {first}, {self.passes} pass(es), {self.restarts} restart(s), "
            f"{self.seconds:.2f} s"
        )
        if self.error:
            lines.append(f"error: {self.error}")
        if self.logs:
            lines.append(f"UFTP's logs: {self.logs}")
        return "\n".join(lines)


class ReceiverError(DinetError):
    pass


@dataclass
class SyncJob:
    ctl: BierController
    bfir: str
    file: Path
    clouds: list[Cloud]
    interface: str  # the repository's interface toward the BFIR
    token: str
    opts: UftpOptions = field(default_factory=UftpOptions)
    netns: str | None = None  # the repository's network namespace (None: this one)
    retries: int = 2  # UFTP restarts for receivers that dropped out
    receiver_wait_s: float = 15.0  # how long a restart waits for a dropped receiver to answer again
    workdir: Path | None = None  # UFTP's restart files and logs (default: a temp dir, kept if the job fails)
    progress: bool = True
    tls: bool = True  # the receivers' status over HTTPS (False: in clear, labs only)
    ca: str | None = None  # the CA of the receivers' certificates (default: the system's)
    trees: TreeController | None = None  # the groups on SR-P2MP trees (the baseline) instead of BIER

    # ---- receivers -----------------------------------------------------------------------------------------
    def _get(self, cloud: Cloud, path: str, timeout: float = 3.0) -> dict[str, Any]:
        auth = {"Authorization": f"Bearer {self.token}"}
        req = urllib.request.Request(f"{'https' if self.tls else 'http'}://{cloud.receiver}{path}", headers=auth)
        ctx = None
        if self.tls:
            from ..creds import client_tls

            ctx = client_tls(self.ca)
        try:
            with ns_mod.entered(self.netns), urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
                data: dict[str, Any] = json.loads(resp.read())
                return data
        except urllib.error.HTTPError as e:
            if e.code == 401:
                raise ConfigError(f"{cloud.name}'s receiver at {cloud.receiver} refused the token") from None
            raise ReceiverError(f"{cloud.name}: HTTP {e.code} for {path}") from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, ssl.SSLCertVerificationError):
                raise ConfigError(
                    f"{cloud.name}'s receiver at {cloud.receiver} shows a certificate this job does not trust "
                    f"({e.reason.verify_message}): the project CA is --ca"
                ) from None
            raise ReceiverError(f"{cloud.name}'s receiver at {cloud.receiver} does not answer ({e})") from None
        except (OSError, ValueError) as e:
            raise ReceiverError(f"{cloud.name}'s receiver at {cloud.receiver} does not answer ({e})") from None

    def _wait_alive(self, cloud: Cloud) -> bool:
        deadline = time.monotonic() + self.receiver_wait_s
        while time.monotonic() < deadline:
            try:
                if self._get(cloud, "/sync/v1/info", 1.0).get("uftpd") == "running":
                    return True
            except ReceiverError:
                pass
            time.sleep(0.2)
        return False

    # ---- the job ---------------------------------------------------------------------------------------------
    def check(self, size: int) -> tuple[dict[str, int], dict[str, str]]:
        """BFR-ids of the clouds, and the clouds that fail before the transfer (with why). Raises ConfigError
        for what must stop the job: an unknown destination, no BIER path, a full disk, a refused token."""
        if not self.clouds:
            raise ConfigError("no destination: name at least one cloud")
        ids = self.ctl.intent.topo.bfr_ids
        bfers = sorted(n for n, b in ids.items() if b is not None and n != self.bfir)
        unknown = [c.name for c in self.clouds if c.name not in bfers]
        if unknown:
            raise ConfigError(f"unknown destination(s) {', '.join(unknown)}; the domain's BFERs are {', '.join(bfers)}")
        cut = sorted({c.name for c in self.clouds} - self.ctl.reachable(self.bfir))
        if cut:
            raise ConfigError(f"no BIER path from {self.bfir} to {', '.join(cut)} (links or BFRs down)")
        failed: dict[str, str] = {}
        mine = fingerprint(self.opts.key) if self.opts.key is not None else None
        for c in self.clouds:
            try:
                info = self._get(c, "/sync/v1/info")
            except ReceiverError as e:
                failed[c.name] = f"failed: {e}"
                continue
            pins = info.get("senders", "any")
            if pins != "any" and mine not in {s.get("fingerprint") for s in pins}:
                failed[c.name] = "failed: it takes files from pinned senders only, and not from " + (
                    f"this key ({mine})" if mine else "an ephemeral key: give the job the pinned --key"
                )
                continue
            if int(info.get("free_bytes", 0)) < size:
                raise ConfigError(f"disk full at {c.name}: {info.get('free_bytes')} bytes free, the file is {size}")
        return {c.name: int(ids[c.name] or 0) for c in self.clouds}, failed

    def run(self) -> SyncReport:
        t0, wall0 = time.monotonic(), time.time()
        if not self.file.is_file():
            raise ConfigError(f"no file {self.file}")
        if not self.token:
            raise ConfigError("no credentials for the receivers: a token (--token-file or $DINET_TOKEN)")
        before = self.file.stat()
        ids, failed = self.check(before.st_size)
        report = SyncReport(str(self.file), before.st_size, sha256_of(self.file))
        live = [c for c in self.clouds if c.name not in failed]
        work = self.workdir or Path(tempfile.mkdtemp(prefix="dinet-sync-"))
        work.mkdir(parents=True, exist_ok=True)
        # the private group: source-specific (232/8), which receivers that pin their senders require
        priv = f"232.5.{random.randrange(1, 255)}.{random.randrange(1, 255)}"
        to = frozenset(c.name for c in live)
        groups = [BierGroup(self.bfir, g, to, udp_port=self.opts.port) for g in (self.opts.pub_group, priv)]
        sender = SenderReport()
        tc, trees = self.trees, []
        try:
            if live:
                w0, t_write = (tc.writes if tc is not None else self.ctl.writes), time.monotonic()
                for g in groups:
                    if tc is not None:
                        trees.append(tc.free_id())
                        tc.start(TreeJob(trees[-1], self.bfir, to, g.dst, g.udp_port))
                    else:
                        self.ctl.open_group(g)
                report.setup_ms = (time.monotonic() - t0) * 1000
                report.write_ms = (time.monotonic() - t_write) * 1000
                report.setup_entries = (tc.writes if tc is not None else self.ctl.writes) - w0
                clients = [uid(ids[c.name]) for c in live]
                argv = sender_argv([self.file], self.interface, priv, clients, self.opts, work / "status")
                self._uftp(argv, work, sender, live, 0)
                for attempt in range(1, self.retries + 1):
                    restart = sorted(work.glob("_group_*_restart"))
                    dropped = [c for c in live if not sender.client(uid(ids[c.name])).ok]
                    if not restart or not dropped:
                        break
                    for c in dropped:
                        self._wait_alive(c)
                    report.restarts += 1
                    path = restart[-1].rename(work / f"restart-{attempt}")
                    argv = sender_argv([self.file], self.interface, priv, [], self.opts, work / "status", path)
                    self._uftp(argv, work, sender, dropped, attempt)
        finally:
            for tree in trees:
                try:
                    tc.stop(tree)  # type: ignore[union-attr]  # trees only hold ids when tc is set
                except DinetError as e:
                    log.warning("tree %d not torn down: %s", tree, e)
            for g in groups if tc is None else []:
                try:
                    self.ctl.close_group(g)
                except DinetError:
                    pass  # the BFIR does not answer: its record is dropped and it is written whole when back
        report.seconds = time.monotonic() - t0
        report.passes = sender.passes
        if sender.first_data_at:
            first = datetime.strptime(sender.first_data_at, "%Y/%m/%d %H:%M:%S.%f").timestamp()
            report.first_data_ms = max(0.0, (first - wall0) * 1000)
        after = self.file.stat()
        if (after.st_size, after.st_mtime_ns, after.st_ino) != (before.st_size, before.st_mtime_ns, before.st_ino):
            report.error = f"{self.file} changed during the send: the copies are not of one file"
        for c in self.clouds:
            report.clouds.append(self._result(c, ids[c.name], failed.get(c.name), sender, report))
        if self.workdir is None:
            if report.ok:
                shutil.rmtree(work, ignore_errors=True)
            else:
                report.logs = str(work)  # UFTP's logs and restart files, for whoever looks into the failure
        return report

    def _uftp(self, argv: list[str], work: Path, sender: SenderReport, clouds: list[Cloud], attempt: int) -> None:
        status, logf = work / "status", work / f"uftp-{attempt}.log"
        status.unlink(missing_ok=True)
        cmd = (["ip", "netns", "exec", self.netns] if self.netns else []) + argv
        stop = threading.Event()
        bars = threading.Thread(target=self._progress, args=(clouds, stop, attempt), daemon=True)
        with logf.open("w") as log:
            proc = subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT)
            bars.start()
            try:
                proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                stop.set()
                bars.join()
        log_text = logf.read_text(errors="replace")
        if proc.returncode not in (0, 7) and not status.exists():  # 7: some receivers failed
            raise DinetError(f"uftp exited with {proc.returncode}: {log_text.strip().splitlines()[-1:]}")
        parse_sender(status.read_text() if status.exists() else "", log_text, sender)

    def _progress(self, clouds: list[Cloud], stop: threading.Event, attempt: int) -> None:
        if not self.progress:
            return
        from tqdm import tqdm

        size = self.file.stat().st_size
        bars = {
            c.name: tqdm(total=size, desc=c.name + (f" (restart {attempt})" if attempt else ""), unit="B",
                         unit_scale=True, position=i, leave=True)
            for i, c in enumerate(clouds)
        }  # fmt: skip
        try:
            while not stop.wait(0.25):
                for c in clouds:
                    try:
                        got = int(self._get(c, "/sync/v1/progress", 0.5).get("receiving", 0))
                    except DinetError:
                        continue
                    bar = bars[c.name]
                    if got > bar.n:
                        bar.update(got - bar.n)
        finally:
            for bar in bars.values():
                bar.close()

    def _result(
        self, c: Cloud, bfr_id: int, failed: str | None, sender: SenderReport, report: SyncReport
    ) -> CloudResult:
        if failed:
            return CloudResult(c.name, bfr_id, failed)
        st = sender.client(uid(bfr_id))
        res = CloudResult(c.name, bfr_id, "", naks=st.naks, seconds=st.seconds)
        if not st.ok:
            res.status = f"failed: {st.status}"
            return res
        deadline = time.monotonic() + self.receiver_wait_s
        while True:  # uftpd moves a file from its temp dir into the store just after it confirms the session
            try:
                got = self._get(c, f"/sync/v1/files/{self.file.name}", timeout=600)
                break
            except ReceiverError as e:
                if "HTTP 404" not in str(e) or time.monotonic() > deadline:
                    res.status = f"failed: {e}"
                    return res
                time.sleep(0.05)
        res.bytes = int(got.get("size", 0))
        res.status = "verified" if got.get("sha256") == report.sha256 and res.bytes == report.size else "hash mismatch"
        res.goodput_mbps = res.bytes * 8 / st.seconds / 1e6 if st.seconds > 0 else 0.0
        return res
