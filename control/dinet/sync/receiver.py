"""`dinet sync-receiver`: a GPU cloud's end of model synchronisation. Runs uftpd into the cloud's model store
and answers the repository's questions over HTTP (aiohttp, as dinet serve): free space before a job, bytes
received while it runs, and the SHA-256 of a received file after it, so the sender checks every copy.

    GET /sync/v1/info          {"client": "0x00000003", "free_bytes": N, "senders": [pinned senders] | "any"}
    GET /sync/v1/progress      {"receiving": bytes written into the temp dir so far}
    GET /sync/v1/files/NAME    {"name", "size", "sha256"} of a received file (404 if absent)

Every request carries `Authorization: Bearer TOKEN`, over HTTPS (--tls-cert/--tls-key: a certificate of the
project CA naming the address the repository reaches it by); without a token or a certificate the receiver
refuses to start unless --insecure. It takes files only from the senders its server list pins (UFTP's -S:
each sender's ID, address and key fingerprint; `dinet sync-pin` writes the line), unless --any-sender. The
uftpd child dies with this process (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import logging
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from ..creds import same_token
from ..errors import ConfigError
from .uftp import UftpOptions, read_servers, receiver_argv

log = logging.getLogger(__name__)

STATE_DIR = ".dinet-sync"  # under the store: uftpd's temp dir, status file and log
CHUNK = 4 << 20


def sha256_of(path: Path) -> str:
    """Streamed: a model far larger than memory is read in 4 MiB chunks."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)  # a link is never followed out of the store
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class SyncReceiver:
    store: Path
    interfaces: list[str]
    client_id: str
    token: str
    opts: UftpOptions = field(default_factory=UftpOptions)
    require_encryption: bool = True
    servers: Path | None = None  # the pinned senders (uftpd -S); None: any sender (any_sender must say so)
    any_sender: bool = False
    proc: subprocess.Popen[bytes] | None = None
    senders: list[dict[str, str]] = field(default_factory=list)
    _hashes: dict[str, tuple[tuple[int, int, int], str]] = field(default_factory=dict)

    @property
    def state(self) -> Path:
        return self.store / STATE_DIR

    def start_uftpd(self) -> None:
        if not self.store.is_dir():
            raise ConfigError(f"the model store {self.store} is not a directory")
        if self.servers is None and not self.any_sender:
            raise ConfigError(
                "the receiver takes files from pinned senders only: --servers FILE (a line per sender, "
                "`dinet sync-pin KEY --address IP` writes it), or --any-sender"
            )
        self.senders = read_servers(self.servers) if self.servers is not None else []
        (self.state / "tmp").mkdir(parents=True, exist_ok=True)
        argv = receiver_argv(
            self.store, self.state / "tmp", self.interfaces, self.client_id, self.opts,
            self.state / "status", self.require_encryption, self.servers,
        )  # fmt: skip
        logf = (self.state / "uftpd.log").open("ab")
        self.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        logf.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # uftpd saves what it needs to resume an interrupted session
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    # ---- HTTP ------------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.add_routes(
            [
                web.get("/sync/v1/info", self.info),
                web.get("/sync/v1/progress", self.progress),
                web.get("/sync/v1/files/{name}", self.file),
            ]
        )
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler):  # type: ignore[no-untyped-def]
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if self.token and not same_token(given, self.token):
            return web.json_response({"error": "unauthorized"}, status=401)
        return await handler(request)

    async def info(self, request: web.Request) -> web.Response:
        st = os.statvfs(self.store)
        alive = self.proc is not None and self.proc.poll() is None
        return web.json_response(
            {
                "client": self.client_id,
                "free_bytes": st.f_bavail * st.f_frsize,
                "uftpd": "running" if alive else "down",
                "senders": self.senders if self.servers is not None else "any",
            }
        )

    async def progress(self, request: web.Request) -> web.Response:
        written = 0
        for p in (self.state / "tmp").rglob("*"):
            if p.is_file() and not p.name.startswith("_group_"):
                st = p.stat()
                written += min(st.st_size, st.st_blocks * 512)  # a sparse file's written part
        return web.json_response({"receiving": written})

    async def file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        path = self.store / name
        if "/" in name or name.startswith(".") or path.is_symlink() or not path.is_file():
            return web.json_response({"error": f"no file {name!r} (links are not followed)"}, status=404)
        st = path.stat()
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._hashes.get(name)
        if cached is None or cached[0] != key:
            digest = await asyncio.get_running_loop().run_in_executor(None, sha256_of, path)
            cached = self._hashes[name] = (key, digest)
        return web.json_response({"name": name, "size": st.st_size, "sha256": cached[1]})


def run(receiver: SyncReceiver, listen: str, tls: Any = None) -> None:
    """uftpd and the HTTP endpoint (HTTPS with `tls`, an ssl context) until SIGINT/SIGTERM."""
    from ..workload.serve import open_site

    receiver.start_uftpd()

    async def main() -> None:
        runner = await open_site(receiver.app(), listen, tls)
        where = f"{'https' if tls else 'http'}://{listen}"
        print(f"dinet sync-receiver: {receiver.client_id} into {receiver.store}, status on {where}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        waiter = asyncio.create_task(stop.wait())
        child = loop.run_in_executor(None, receiver.proc.wait) if receiver.proc else None
        waits: list[asyncio.Future[Any]] = [waiter] + ([child] if child else [])
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if child in done:
            rc = receiver.proc.returncode if receiver.proc else "?"
            log.error("uftpd exited with %s (see %s)", rc, receiver.state / "uftpd.log")
        receiver.stop()  # before the loop closes: its executor waits for the thread that waits for uftpd
        await runner.cleanup()

    try:
        asyncio.run(main())
    finally:
        receiver.stop()
