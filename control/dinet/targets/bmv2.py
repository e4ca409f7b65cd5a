"""BMv2 for dinet: compile p4/dinet.p4 with p4c, and run simple_switch_grpc in a network namespace with its
P4Runtime server on a unix socket (so a controller in any namespace reaches it). Tools come from PATH only."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataPlaneError
from ..paths import P4_DIR

log = logging.getLogger(__name__)
TOOLS = ("p4c-bm2-ss", "simple_switch_grpc")


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


@dataclass(frozen=True)
class Pipeline:
    json: Path
    p4info: Path


def compile_p4(defines: Mapping[str, int] | None = None, out_root: Path | None = None) -> Pipeline:
    """Compiles p4/dinet.p4 (cached by the sources and the -D values) and returns the BMv2 JSON and P4Info."""
    if shutil.which("p4c-bm2-ss") is None:
        raise DataPlaneError("p4c-bm2-ss is not on PATH (see the README: P4 toolchain)")
    flags = [f"-D{k}={v}" for k, v in sorted((defines or {}).items())]
    h = hashlib.sha256(" ".join(flags).encode())
    for src in sorted(P4_DIR.glob("*.p4")) + [P4_DIR.parent / "ebpf" / "dinet_consts.h"]:
        h.update(src.read_bytes())
    out = (out_root or P4_DIR / "build") / h.hexdigest()[:16]
    pipe = Pipeline(out / "dinet.json", out / "dinet.p4info.txtpb")
    if pipe.json.exists() and pipe.p4info.exists():
        return pipe
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        "p4c-bm2-ss",
        "--arch",
        "v1model",
        "-I",
        str(P4_DIR),
        *flags,
        "-o",
        str(pipe.json),
        "--p4runtime-files",
        str(pipe.p4info),
        str(P4_DIR / "dinet.p4"),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise DataPlaneError(f"p4c rejected dinet.p4: {res.stderr.strip()[:2000]}")
    if "warning" in res.stderr.lower():
        log.warning("p4c: %s", res.stderr.strip())
    return pipe


@dataclass
class Bmv2Switch:
    """simple_switch_grpc in namespace `netns` (None: this one), port number -> interface there.

    Use as a context manager; leaving it stops the switch and removes its socket and logs directory."""

    name: str
    ports: dict[int, str]
    netns: str | None = None
    device_id: int = 0
    log_console: bool = False
    pcap_dir: Path | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="dinet-bmv2-")))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"unix:{self.workdir / 'p4rt.sock'}"

    def start(self) -> Bmv2Switch:
        missing = missing_tools()
        if missing:
            raise DataPlaneError(f"{', '.join(missing)} not on PATH (see the README: P4 toolchain)")
        cmd = [
            "simple_switch_grpc",
            "--device-id",
            str(self.device_id),
            "--no-p4",
            "--thrift-port",
            str(9090 + self.device_id),
        ]
        for port, ifname in sorted(self.ports.items()):
            cmd += ["-i", f"{port}@{ifname}"]
        if self.pcap_dir:
            cmd += ["--pcap", str(self.pcap_dir)]
        cmd += ["--log-file", str(self.workdir / "switch"), "--log-flush"] if self.log_console else []
        cmd += ["--", "--grpc-server-addr", self.address]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.workdir / "stderr", "wb"))
        return self

    def restart(self) -> Bmv2Switch:
        """Kills the switch and starts it again, empty (what a crash and a supervisor would do)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        (self.workdir / "p4rt.sock").unlink(missing_ok=True)
        return self.start()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def stderr(self) -> str:
        try:
            return (self.workdir / "stderr").read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Bmv2Switch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
