"""A lab's emulated links and paths, changed and measured at run time: a client's uplink rate, a path's delay
(on the wire, and in what decides reads), a path cut, and the RTT and loss each path achieves. A Lab holds one
(`lab.links`); the emulators are its, the network and the intent the lab's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .linkem import LinkEmulator, PathReport, ping


@dataclass
class Links:
    ns: Callable[[str], str]  # a scenario node's network namespace
    delay_changed: Callable[[], object]  # told when a path's delay changes (the lab writes the intent again)
    emulators: list[LinkEmulator] = field(default_factory=list)
    paths: list[tuple[str, str, str, Any]] = field(default_factory=list)  # (ingress, site, router address, PathSpec)
    path_delay: dict[tuple[str, str], float] = field(default_factory=dict)  # one-way delays set at run time

    def delay_ms(self, ingress: str, site: str, configured: float) -> float:
        """A path's one-way delay now: as set at run time, else as configured."""
        return self.path_delay.get((ingress, site), configured)

    def probe_address(self, ingress: str, site: str) -> str:
        """The site router's address on the path from the ingress node (what a probe pings)."""
        return next(a for i, s, a, _ in self.paths if (i, s) == (ingress, site))

    def _path(self, ingress: str, site: str) -> LinkEmulator:
        e = next((e for e in self.emulators if (e.a, e.b) == (ingress, site)), None)
        if e is None:
            raise ConfigError(f"no emulated path from {ingress} to {site} (a path with a delay has one)")
        return e

    def _uplink(self, client: str) -> LinkEmulator:
        e = next((e for e in self.emulators if e.a == client), None)
        if e is None:
            raise ConfigError(f"{client} has no emulated link (a link with a rate or a delay has one)")
        return e

    def set_uplink_rate(self, client: str, mbit: float) -> None:
        """A client's uplink (from it toward the network) changes its rate at run time (a device's uplink
        dropping); the downlink keeps its own."""
        e = self._uplink(client)
        e.set_rate(mbit, toward=e.b)

    def uplink_bytes(self, client: str) -> int:
        """Bytes a client's emulated link has carried from it toward the network (the link's own counter)."""
        e = self._uplink(client)
        return e.tx_bytes(toward=e.b)

    def cut_path(self, ingress: str, site: str, cut: bool = True) -> None:
        """The path from an ingress node to a site fails (every frame dropped both ways) or comes back. What
        decides learns it only by measuring (a lab with probes=True), as it would in a network."""
        self._path(ingress, site).set_cut(cut)

    def set_classes(self, on: bool) -> int:
        """Class-based queuing by DSCP (dinet.lab.classes) on every emulated link with a rate, both ways, or
        back to one FIFO each. Returns the links changed."""
        links = [e for e in self.emulators if e.rates]
        for e in links:
            e.set_classes(on)
        return len(links)

    def class_counts(self) -> dict[str, dict[str, int]]:
        """Class -> packets classified, summed over every link with classes."""
        out: dict[str, dict[str, int]] = {}
        for e in self.emulators:
            for dev, counts in e.class_counts().items():
                out[f"{e.name}:{dev}"] = counts
        return out

    def set_path_delay(self, site: str, ingress: str, delay_ms: float) -> None:
        """A path's one-way delay changes at run time: on the wire (its link emulator) and in the network
        metrics what decides reads (the lab writes its intent again: the lab's stand-in for the network's
        telemetry; a site with a `probe:` address is measured instead)."""
        self._path(ingress, site).set_delay(delay_ms)
        self.path_delay[(ingress, site)] = delay_ms
        self.delay_changed()

    def measure_paths(self, count: int = 20) -> list[PathReport]:
        """Pings each path from its ingress router to the site router: RTT and loss achieved, beside the path
        as it is configured now."""

        def now(ing: str, site: str, spec: Any) -> Any:
            d = self.path_delay.get((ing, site))
            return spec if d is None else spec.model_copy(update={"delay_ms": d})

        started = [
            (ing, site, now(ing, site, spec), ping(self.ns(ing), addr, count)) for ing, site, addr, spec in self.paths
        ]
        return [PathReport.from_ping(ing, site, spec, p) for ing, site, spec, p in started]
