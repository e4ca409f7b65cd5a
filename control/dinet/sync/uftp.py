"""UFTP's command lines and outputs: the sender (uftp) and receiver (uftpd) of Debian's `uftp` package, 4.10.

UFTP is the transport because it is the field's reliable multicast file transfer: NAK-based repair in
passes, per-receiver completion, restartable sessions, TFMCC congestion control and group encryption keyed
by ECDH with ECDSA signatures. dinet adds the network (the BIER group of a job) and the checks around it."""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .. import consts
from ..errors import ConfigError

# the announce group receivers listen on (uftpd -M): source-specific (232/8), as receivers that pin their
# senders (uftpd -S, dinet's default) require of both groups
PUB_GROUP = "232.4.4.1"
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
    dscp: int = field(default_factory=lambda: consts.get("DINET_DSCP_SYNC"))  # LE (RFC 8622): it yields to inference

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
    argv += ["-Q", str(opts.dscp)]  # every packet it sends marked (UFTP: 0-63)
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


_FP = re.compile(r"fingerprint: ((?:[0-9A-F]{2}:){19}[0-9A-F]{2})")
_SERVER = re.compile(r"^0x[0-9A-Fa-f]{8}\|[^|]+(\|(?:[0-9A-Fa-f]{2}:){19}[0-9A-Fa-f]{2})?$")


def fingerprint(key: Path) -> str:
    """A sender key's fingerprint as UFTP prints and checks it (uftp_keymgt: SHA-1 of the public key)."""
    out = subprocess.run([require("uftp_keymgt"), str(key)], capture_output=True, text=True)
    m = _FP.search(out.stdout + out.stderr)  # uftp_keymgt prints on stderr
    if out.returncode != 0 or m is None:
        raise ConfigError(f"{key} is no UFTP key (uftp_keymgt: {(out.stderr or out.stdout).strip()[:200]})")
    return m.group(1)


def make_key(key: Path) -> str:
    """A new sender key (EC, CURVE) in `key`, mode 0600; its fingerprint."""
    if key.exists():
        raise ConfigError(f"{key} exists: a sender keeps its key (its receivers pin it)")
    out = subprocess.run([require("uftp_keymgt"), "-g", f"ec:{CURVE}", str(key)], capture_output=True, text=True)
    if out.returncode != 0:
        raise ConfigError(f"cannot make a key in {key}: {(out.stderr or out.stdout).strip()[:200]}")
    key.chmod(0o600)
    return fingerprint(key)


def server_line(address: str, fp: str) -> str:
    """The line of uftpd's server list (-S) that pins a sender: its UFTP ID (its IPv4 address, uftp's default
    ID), the address its announcements come from, and its key's fingerprint."""
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        raise ConfigError(f"a sender's address is IPv4 (uftp's ID is derived from it), not {address!r}") from None
    return f"0x{int(ip):08X}|{ip}|{fp}"


def read_servers(path: Path) -> list[dict[str, str]]:
    """The senders a server list pins, checked line by line (a typo is one error naming the line)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"the server list {path} cannot be read: {e.strerror}") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not _SERVER.match(line):
            raise ConfigError(f"{path}:{n}: not ID|ADDRESS|FINGERPRINT (0x1234ABCD|10.0.0.1|AA:BB:...): {line!r}")
        uid_, addr, *fp = line.split("|")
        out.append({"id": uid_, "address": addr, "fingerprint": fp[0].upper() if fp else ""})
    if not out:
        raise ConfigError(f"the server list {path} names no sender: no one could send to this receiver")
    return out
