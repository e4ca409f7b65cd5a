"""A lab's own servers beside the engines: each device's model servers (the one its `local:` names, and the
experiments' device-side roles: a drafter, a cascade's small model, a split model's head, the device alone)
and L7 routers on ingress nodes (`dinet route`). A Lab holds one (`lab.servers`); each is stopped with the
lab, or before by its stop method."""

from __future__ import annotations

import subprocess
import sys

from ..errors import ConfigError
from .context import LabContext
from .linkem import stop_processes


class Servers:
    def __init__(self, context: LabContext):
        self.spec, self.instances, self.procs, self.pki = context.spec, context.instances, context.procs, context.pki
        self.ingress_index = context.ingress_index
        self.locals: list[subprocess.Popen[str]] = []  # every server it started (stopped with the lab)
        self.routers: dict[str, subprocess.Popen[str]] = {}  # L7 routers (start_router) by URL
        self._local_port = 9100  # serve_local's ports on the devices
        self._served: dict[str, subprocess.Popen[str]] = {}  # serve_local's servers by URL

    def start_local(self, client: str) -> None:
        """A device's own model server (on its loopback)."""
        local = next(c for c in self.spec.clients if c.name == client).local
        assert local is not None
        args = [sys.executable, "-m", "dinet.cli", "serve", "--listen", f"127.0.0.1:{local.port}"]
        if local.role == "draft":  # every round to the target model's VIP: the network picks the verifier
            svc = self.spec.service(str(local.verify_service))
            args += ["--role", "draft", "--verify-url", f"{self.pki.scheme}://{svc.vip}:{svc.port}", *self.pki.args()]
            args += ["--acceptance", str(local.acceptance)]
        args += ["--profile", local.profile, "--name", f"{client}-local"]
        self.locals.append(self.procs.start_ready(client, args, client, f"the local model on {client}"))

    def serve_local(self, client: str, name: str, args: list[str]) -> str:
        """Another model server on a device (`dinet serve ARGS` on its loopback, stopped with the lab): the
        experiments' device-side roles (a drafter, a cascade's small model, a split model's head, the device
        alone). Returns its URL on the device."""
        if client not in {c.name for c in self.spec.clients}:
            raise ConfigError(f"no client {client!r}")
        self._local_port += 1
        listen = f"127.0.0.1:{self._local_port}"
        cmd = [sys.executable, "-m", "dinet.cli", "serve", "--listen", listen, "--name", name, *args]
        p = self.procs.start_ready(client, cmd, f"{client}-{name}", f"{name} on {client}")
        self.locals.append(p)
        self._served[f"http://{listen}"] = p
        return f"http://{listen}"

    def stop_local(self, url: str) -> None:
        """Stops a server serve_local started (its connections close with it)."""
        p = self._served.pop(url, None)
        if p is None:
            raise ConfigError(f"no server of serve_local at {url}")
        stop_processes([p])
        self.locals.remove(p)

    def start_router(self, service: str, ingress: str | None = None, guard: int = 4) -> str:
        """An L7 prefix-aware router (`dinet route`) on an ingress node, in front of the service's instances
        (their own addresses, past the VIP), where a gateway would run: clients reach it on the node's LAN
        address. Stopped with the lab; returns its URL."""
        ing = ingress or self.spec.ingress[0].name
        k = self.ingress_index(ing)
        svc = self.spec.service(service)
        listen = f"10.0.{k}.1:{8100 + len(self.routers)}"
        cmd = [sys.executable, "-m", "dinet.cli", "route", "--listen", listen, "--guard", str(guard)]
        for inst in self.instances.values():
            if service in inst.spec.services:
                cmd += ["--backend", f"{self.pki.scheme}://{inst.endpoint}:{svc.port}"]
        cmd += self.pki.args()
        p = self.procs.start_ready(ing, cmd, f"{ing}-route", f"dinet route on {ing}")
        self.locals.append(p)
        self.routers[f"http://{listen}"] = p
        return f"http://{listen}"

    def stop_router(self, url: str) -> None:
        """Stops a router start_router started."""
        p = self.routers.pop(url)
        stop_processes([p])
        self.locals.remove(p)

    def close(self) -> None:
        """Every server it started, stopped."""
        stop_processes(self.locals)
        self.locals, self.routers, self._served = [], {}, {}
