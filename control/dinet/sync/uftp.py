"""UFTP's command lines and outputs: the sender (uftp) and receiver (uftpd) of Debian's `uftp` package, 4.10.

UFTP is the transport because it is the field's reliable multicast file transfer: NAK-based repair in
passes, per-receiver completion, restartable sessions, TFMCC congestion control and group encryption keyed
by ECDH with ECDSA signatures. dinet adds the network (the BIER group of a job) and the checks around it."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

PUB_GROUP = "230.4.4.1"  # UFTP's default announce group; receivers listen on it (uftpd -M)
PORT = 1044  # UFTP's default port: announcements and data go to it
CURVE = "prime256v1"


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ConfigError(f"{tool} is not on PATH: install Debian's uftp package (apt-get install uftp)")
    return path


def uid(bfr_id: int) -> str:
    """A receiver's UFTP client ID: its BFER's BFR-id, so the sender's reports name the BFER."""
    if not 0 < bfr_id < 2**32:
        raise ConfigError(f"a BFR-id is 1..2^32-1, not {bfr_id}")
    return f"0x{bfr_id:08X}"


@dataclass(frozen=True)
class UftpOptions:
    port: int = PORT
    pub_group: str = PUB_GROUP
    rate_mbps: float = 200.0  # fixed rate (ignored with cc)
    cc: bool = False  # TFMCC (RFC 4654) instead of a fixed rate
    encrypt: bool = True  # AES-256-GCM, keys by ECDH (prime256v1), ECDSA-signed
    key: Path | None = None  # the sender's EC private key (PEM); None: an ephemeral one per job
    grtt: str = "0.05:0.01:2"  # initial:min:max group round-trip time, s (UFTP's default 0.5:0.01:15)
    robust: int = 10  # how many times a message is repeated before a receiver is given up (10..50)
    block_size: int = 1300

    def crypto_args(self) -> list[str]:
        if not self.encrypt:
            return ["-Y", "none"]
        args = ["-Y", "aes256-gcm", "-h", "sha256", "-e", f"ecdh_ecdsa:{CURVE}"]
        return args + (["-k", str(self.key)] if self.key else ["-K", CURVE])


def sender_argv(
    files: list[Path],
    interface: str,
    priv_group: str,
    clients: list[str],
    opts: UftpOptions,
    status_file: Path,
    restart_file: Path | None = None,
) -> list[str]:
    """uftp for one job: closed group (only `clients`, by UFTP ID), restartable, status lines to a file,
    timestamped log lines on stderr."""
    argv = [require("uftp"), "-I", interface, "-M", opts.pub_group, "-P", priv_group, "-p", str(opts.port)]
    argv += ["-C", "tfmcc"] if opts.cc else ["-R", str(max(1, int(opts.rate_mbps * 1000)))]
    argv += opts.crypto_args()
    argv += ["-r", opts.grtt, "-s", str(opts.robust), "-b", str(opts.block_size), "-f", "-T", "-S", str(status_file)]
    if restart_file is not None:
        return argv + ["-F", str(restart_file)]
    return argv + ["-H", ",".join(clients)] + [str(f) for f in files]


def receiver_argv(
    store: Path, temp: Path, interfaces: list[str], client_id: str, opts: UftpOptions, status_file: Path,
    require_encryption: bool = True, servers: Path | None = None,
) -> list[str]:  # fmt: skip
    """uftpd in the foreground: into a temp dir on the store's filesystem (so an interrupted session can be
    restarted), refusing sessions in clear unless told otherwise, with an ephemeral EC key."""
    argv = [require("uftpd"), "-d", "-q", "-I", ",".join(interfaces), "-U", client_id, "-M", opts.pub_group]
    argv += ["-p", str(opts.port), "-D", str(store), "-T", str(temp), "-F", str(status_file), "-K", f"ec:{CURVE}"]
    if require_encryption:
        argv.append("-E")
    if servers is not None:
        argv += ["-S", str(servers)]
    return argv


@dataclass
class ClientStatus:
    """One receiver's outcome as the sender saw it."""

    client: str
    connected: bool = False
    status: str = "no answer"  # copy | overwrite | skipped | rejected | lost | no answer
    kbytes: int = 0
    seconds: float = 0.0
    naks: int = 0

    @property
    def ok(self) -> bool:
        return self.status in ("copy", "overwrite", "skipped")


@dataclass
class SenderReport:
    clients: dict[str, ClientStatus] = field(default_factory=dict)
    passes: int = 0
    first_data_at: str | None = None  # the log's timestamp of the first data pass

    def client(self, c: str) -> ClientStatus:
        return self.clients.setdefault(c, ClientStatus(c))


_NAKS = re.compile(r"Got (\d+) NAKs for section \d+ from client (0x[0-9A-Fa-f]{8})")
_PASS = re.compile(r"^(?:(\d{4}/\d\d/\d\d \S+): )?(?:\[[^\]]*\]: )?Starting pass (\d+)")


def parse_sender(status_text: str, log_text: str, report: SenderReport | None = None) -> SenderReport:
    """Folds one uftp run's status file (CONNECT/RESULT/STATS lines, `uftp -S`) and log into `report`."""
    rep = report or SenderReport()
    for line in status_text.splitlines():
        parts = line.strip().split(";")
        if parts[0] == "CONNECT" and len(parts) >= 3:
            rep.client(parts[2]).connected = parts[1] == "success"
        elif parts[0] == "RESULT" and len(parts) >= 5:
            c = rep.client(parts[1])
            c.status = parts[4]
            kb = parts[3].removesuffix("KB")
            c.kbytes = int(kb) if kb.isdigit() else 0
        elif parts[0] == "STATS" and len(parts) >= 7:
            try:
                rep.client(parts[1]).seconds = float(parts[6])
            except ValueError:
                pass
    for line in log_text.splitlines():
        if m := _NAKS.search(line):
            rep.client(m.group(2).upper().replace("0X", "0x")).naks += int(m.group(1))
        elif m := _PASS.search(line):
            rep.passes += 1
            if rep.first_data_at is None:
                rep.first_data_at = m.group(1)
    return rep
