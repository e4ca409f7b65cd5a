"""A lab's TLS (tls=True): a CA of its own for as long as the lab lives, a certificate per model server naming
the service VIPs it answers, its own address and loopback, and what a client passes to check them."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path


class Pki:
    def __init__(self, folder: Path, on: bool):
        self.folder, self.on = folder, on

    @property
    def scheme(self) -> str:
        return "https" if self.on else "http"

    @property
    def ca(self) -> str | None:
        """The CA's certificate: what a client trusts the model servers by (None without TLS)."""
        return str(self.folder / "ca.crt") if self.on else None

    def args(self) -> list[str]:
        """`dinet load`'s (or an agent's, a router's) arguments to check the model servers' certificates."""
        return ["--ca", str(self.ca)] if self.ca else []

    def server_args(self, name: str) -> list[str]:
        """`dinet serve`'s arguments for the certificate issued to `name`."""
        if not self.on:
            return []
        return ["--tls-cert", str(self.folder / f"{name}.crt"), "--tls-key", str(self.folder / f"{name}.key")]

    def issue(self, servers: Iterable[tuple[str, Iterable[str]]]) -> None:
        """A new CA and a certificate for each (name, the addresses it answers on)."""
        from ..creds import init_ca, issue

        shutil.rmtree(self.folder, ignore_errors=True)
        init_ca(self.folder, days=30)
        for name, addresses in servers:
            issue(self.folder, name, days=30, addresses=tuple(addresses))
