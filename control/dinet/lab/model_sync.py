"""Model synchronisation in network namespaces: a BIER domain on the eBPF data plane (dinet.lab.bier_domain)
that also routes unicast (the receivers' replies and status), a repository behind the BFIR, and a
`dinet sync-receiver` process in every BFER's namespace with its own model store, as they are deployed: each
receiver pins the repository (its UFTP key's fingerprint, made for the lab) and answers over HTTPS with a
certificate from the lab's CA.

    with SyncLab("ms", tree(), Path("/tmp/stores"), token="t") as lab:
        report = lab.job(Path("model.bin"), ["e1", "e3", "e5", "e7"]).run()

Every namespace, program, process and store is removed on exit, also on error or Ctrl-C. A demo:
`dinet lab sync-demo` (make demo-sync) pushes 64 MiB to four of eight clouds and prints the table."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..paths import BPFFS_ROOT
from ..policy.bift import BierTopology
from ..sync.job import Cloud, SyncJob
from ..sync.uftp import UftpOptions, make_key, server_line
from .bier_domain import SOURCE_ADDR, BierDomain, tree
from .rig import Rig

STATUS_PORT = 9444


@dataclass
class SyncLab(Rig):
    prefix: str
    topo: BierTopology
    root: Path  # the clouds' model stores go under it, one folder each
    token: str = "sync-lab-token"
    bpffs_root: Path = BPFFS_ROOT
    domain_options: dict[str, Any] = field(default_factory=dict)  # BierDomain's: link_mbit, xdp
    domain: BierDomain = field(init=False)
    procs: dict[str, subprocess.Popen[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.domain = BierDomain(
            self.prefix, self.topo, 1, bpffs_root=self.bpffs_root, unicast=True, **self.domain_options
        )

    def build(self) -> None:
        self.domain.build()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "token").write_text(self.token + "\n")
        self._credentials()
        for name in self.clouds:  # every receiver started at once, then each waited for (a second each)
            self.store(name).mkdir(parents=True, exist_ok=True)
            self._spawn(name)
        for name in self.clouds:
            self._started(name)

    @property
    def clouds(self) -> list[str]:
        """Every BFER but the BFIR: each a GPU cloud with a receiver."""
        return [n for n, b in self.topo.bfr_ids.items() if b is not None and n != self.domain.bfir]

    @property
    def key(self) -> Path:
        """The repository's UFTP key: the one sender every receiver takes files from."""
        return self.root / ".repo" / "uftp.key"

    @property
    def ca(self) -> str:
        return str(self.root / ".repo" / "tls" / "ca.crt")

    def _credentials(self) -> None:
        from ..creds import init_ca, issue

        d = self.root / ".repo"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        (d / "servers").write_text(server_line(SOURCE_ADDR, make_key(self.key)) + "\n")
        init_ca(d / "tls", days=30)
        for name in self.clouds:
            issue(d / "tls", name, days=30, addresses=(self.domain.router_addr(name),))

    def store(self, name: str) -> Path:
        return self.root / name

    def cloud(self, name: str) -> Cloud:
        """A cloud of the domain; a name it does not know gets a documentation address (TEST-NET-1), so that
        the job, not the rig, says what is wrong with it."""
        addr = self.domain.router_addr(name) if name in self.topo.bfr_ids else "192.0.2.1"
        return Cloud(name, f"{addr}:{STATUS_PORT}")

    def start_receiver(self, name: str) -> None:
        self._spawn(name)
        self._started(name)

    def _spawn(self, name: str) -> None:
        ifaces = sorted(ifn for (node, _), ifn in self.domain.ifname.items() if node == name)
        argv = ["ip", "netns", "exec", self.domain.net.ns(name), sys.executable, "-m", "dinet.cli", "sync-receiver"]
        argv += ["--store", str(self.store(name)), "--interfaces", ",".join(ifaces)]
        argv += ["--bfr-id", str(self.topo.bfr_ids[name]), "--token-file", str(self.root / "token")]
        argv += ["--listen", f"{self.domain.router_addr(name)}:{STATUS_PORT}"]
        argv += ["--servers", str(self.root / ".repo" / "servers")]
        tls = self.root / ".repo" / "tls"
        argv += ["--tls-cert", str(tls / f"{name}.crt"), "--tls-key", str(tls / f"{name}.key")]
        # in procs at once: a failed build's close() stops it
        self.procs[name] = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def _started(self, name: str) -> None:
        """Waits for the receiver's first line; one that does not say it started is stopped, with its error."""
        proc = self.procs[name]
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("dinet sync-receiver"):
            proc.kill()
            err = proc.stderr.read() if proc.stderr else ""
            self.stop_receiver(name, kill=True)
            raise RuntimeError(f"the receiver of {name} did not start: {line}{err}")

    def stop_receiver(self, name: str, kill: bool = False) -> None:
        proc = self.procs.pop(name)
        proc.kill() if kill else proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for f in (proc.stdout, proc.stderr):
            if f:
                f.close()

    def job(self, file: Path, to: list[str], **kw: Any) -> SyncJob:
        """A job from the repository (the source namespace behind the BFIR) to the clouds `to`."""
        opts = kw.get("opts") or UftpOptions(rate_mbps=400)
        kw["opts"] = opts if opts.key is not None else dataclasses.replace(opts, key=self.key)  # the pinned key
        kw.setdefault("workdir", self.root / ".sender")
        kw.setdefault("ca", self.ca)
        return SyncJob(
            self.domain.ctl(), self.domain.bfir, file, [self.cloud(n) for n in to], "eth0", self.token,
            netns=self.domain.net.ns("src"), **kw,
        )  # fmt: skip

    def intent(self) -> dict[str, Any]:
        """The domain as an intent file says it (for `dinet sync --intent`): every BFR a local TC node in its
        namespace, the links with their ports, and every cloud's receiver."""
        from ..targets import netns

        d = self.domain
        links = [
            {
                "a": k.a, "b": k.b, "cost": k.cost,
                "a_port": [d.ifname[(k.a, k.b)], netns.mac_of(d.ifname[(k.a, k.b)], d.net.ns(k.a))],
                "b_port": [d.ifname[(k.b, k.a)], netns.mac_of(d.ifname[(k.b, k.a)], d.net.ns(k.b))],
            }
            for k in self.topo.links
        ]  # fmt: skip
        return {
            "nodes": {
                n: {"target": "local", "name": f"{self.prefix}{n}", "netns": d.net.ns(n)} for n in self.topo.bfr_ids
            },
            "bier": {
                "bsl": 64,
                "bfrs": dict(self.topo.bfr_ids),
                "links": links,
                "receivers": {c: self.cloud(c).receiver for c in self.clouds},
            },
        }

    def close(self) -> None:
        for name in list(self.procs):
            self.stop_receiver(name)
        self.domain.close()
        if self.root.exists():
            shutil.rmtree(self.root)


def demo() -> bool:
    """Pushes 64 MiB to four of eight clouds of a three-level BIER domain and prints the per-cloud table;
    whether every cloud has the file (`dinet lab sync-demo`)."""

    root = Path(f"/tmp/dinet-model-sync-{os.getpid()}")
    with SyncLab(f"ms{os.getpid() % 1000}", tree(), root / "clouds") as lab:
        model = root / "model.bin"
        with model.open("wb") as f:
            for _ in range(64):
                f.write(os.urandom(1 << 20))
        report = lab.job(model, ["e1", "e3", "e5", "e7"]).run()
        print(report.table())
        model.unlink()
    shutil.rmtree(root, ignore_errors=True)
    return report.ok
