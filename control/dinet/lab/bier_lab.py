"""model-sync scenarios (kind: model-sync) for `dinet lab`: the scenario's BIER domain in network namespaces
(dinet.lab.bier_domain), three levels below the repository's BFIR.

- target xdp: the eBPF BIER data plane (TC, with the XDP fast path when links are not shaped) routing unicast
  too, and a `dinet sync-receiver` per cloud (dinet.lab.model_sync): `check()` pushes a file to every cloud
  with UFTP and verifies it byte for byte.
- target bmv2: every BFR a BMv2 switch running p4/dinet.p4: `check()` sends datagrams into the domain and
  counts them at every cloud (each exactly once). UFTP needs a unicast path back from the clouds, which the
  P4 BFRs do not route: the sync itself runs on the eBPF domain.

Not Mininet: the BIER domain is the namespace rig the BIER tests and benchmarks share; the state file lists
its namespace prefix and processes, so `dinet lab down` removes it after a crash as it does a Mininet lab."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DinetError
from ..paths import BPFFS_ROOT
from .bier_domain import BierDomain, tree
from .model_sync import SyncLab
from .net import STATE_DIR, clean, lab_tag
from .rig import Rig
from .scenario import ScenarioSpec


@dataclass
class CheckResult:
    clouds: dict[str, bool]  # cloud -> got it whole (xdp: the file verified; bmv2: every datagram once)
    detail: str

    @property
    def ok(self) -> bool:
        return all(self.clouds.values())


class BierLab(Rig):
    def __init__(
        self, spec: ScenarioSpec, target: str = "xdp", workdir: Path | None = None, state_dir: Path = STATE_DIR
    ):
        if spec.model_sync is None:
            raise DinetError(f"scenario {spec.name} is not a model-sync scenario")
        self.spec, self.ms, self.target = spec, spec.model_sync, target
        self.tag = lab_tag(spec.name)
        self.workdir = workdir or Path(f"/tmp/dinet-lab-{spec.name}")
        self.state_path = state_dir / f"{spec.name}.json"
        self.topo = tree(leaves=self.ms.clouds, redundant=self.ms.redundant)
        self.sync: SyncLab | None = None
        self.domain: BierDomain | None = None
        self.state: dict[str, Any] = {"pid": os.getpid(), "tag": self.tag, "netns_prefix": f"{self.tag}b"}

    @property
    def clouds(self) -> list[str]:
        return [n for n, b in self.topo.bfr_ids.items() if b is not None and n != "r"]

    def ready(self) -> None:
        if self.state_path.exists():
            raise DinetError(f"a lab {self.spec.name!r} is up already ({self.state_path}): `dinet lab down` it first")

    def build(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        self.state_path.write_text(json.dumps(self.state))
        self.workdir.mkdir(parents=True, exist_ok=True)
        prefix = self.state["netns_prefix"]
        if self.target == "xdp":
            rate = self.ms.link.bw_mbit or 0.0
            opts = {"link_mbit": rate, "xdp": not rate}  # XDP redirects skip the shaping qdisc
            self.sync = SyncLab(prefix, self.topo, self.workdir / "clouds", domain_options=opts).__enter__()
            self.domain = self.sync.domain
        else:
            self.domain = BierDomain(prefix, self.topo, 1, target="bmv2").__enter__()
            self.domain.install_bifts()

    def close(self) -> None:
        if self.sync is not None:
            self.sync.close()
        elif self.domain is not None:
            self.domain.close()
        self.sync = self.domain = None
        clean(self.state, BPFFS_ROOT)
        with contextlib.suppress(FileNotFoundError):
            self.state_path.unlink()

    def check(self, mib: int | None = None) -> CheckResult:
        """Pushes `mib` MiB (default: the scenario's check_mib) to every cloud and says who got it whole."""
        mib = mib or self.ms.check_mib
        if self.sync is not None:
            model = self.workdir / "check.bin"
            with model.open("wb") as f:
                f.write(os.urandom(mib << 20))
            digest = hashlib.sha256(model.read_bytes()).hexdigest()
            report = self.sync.job(model, self.clouds).run()
            got = {c: (self.sync.store(c) / model.name).is_file() for c in self.clouds}
            same = {
                c: ok and hashlib.sha256((self.sync.store(c) / model.name).read_bytes()).hexdigest() == digest
                for c, ok in got.items()
            }
            model.unlink()
            return CheckResult(same, f"{mib} MiB by UFTP over BIER in {report.seconds:.1f} s ({report.error or 'ok'})")
        assert self.domain is not None
        batch, batches = 10, 5
        self.domain.install_bfir(set(self.clouds))
        seen: dict[str, list[int]] = {c: [] for c in self.clouds}
        for k in range(batches):  # a software switch's queues take bursts of tens, not hundreds
            self.domain.send(batch, start=k * batch)
            for c, nums in self.domain.received({c: batch for c in self.clouds}).items():
                seen.setdefault(c, []).extend(nums)
        count = batch * batches
        ok = {c: sorted(seen[c]) == list(range(count)) for c in self.clouds}
        return CheckResult(ok, f"{count} datagrams through the BMv2 BFRs, each cloud once")
