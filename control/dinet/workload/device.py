"""Cloud-edge-device co-inference: a device with a pruned model of its own decides, per request, whether the
network pays off, from the same metrics the controller steers by.

The controller (`dinet run`) publishes per ingress node and instance its installed weight, whether it takes
new flows, its Level 1 compute score and the path delay toward its site (dinet.services.observe). A device
offloads a request to the service's VIP when some instance takes new flows (up, weight > 0), is not overloaded
(compute below the policy's overload threshold) and sits within the device's delay budget (round trip); else
it answers locally with its pruned model. The view is read at most every `refresh` seconds.

    view = OffloadView("http://172.31.255.254:9464/metrics", "10.99.0.1:8000/tcp", max_delay_ms=20)
    url = spec.url if await view.pays_off(session) else local_url
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..policy.decide import Policy
from ..promtext import samples


@dataclass
class OffloadView:
    url: str  # the controller's Prometheus endpoint
    service: str  # VIP:PORT/PROTO, as dinet names services
    node: str = "0"  # the ingress node this device is behind (its index in the intent)
    max_delay_ms: float = 20.0  # the round trip to a site worth taking for a better model
    overload: float = Policy().overload
    refresh: float = 0.5
    _at: float = -1e9
    _pays: bool = True
    errors: int = 0  # reads of the view that failed (then the last answer stands)
    rows: dict[str, dict[str, float]] = field(default_factory=dict)

    def decide(self, text: str) -> bool:
        """From one read of the controller's metrics: does offloading pay off now?"""
        rows: dict[str, dict[str, float]] = {}
        names = {
            "dinet_instance_weight": "weight",
            "dinet_instance_up": "up",
            "dinet_instance_compute": "compute",
            "dinet_instance_path_delay_ms": "delay_ms",
        }
        for name, lab, value in samples(text):
            if name in names and lab.get("service") == self.service and lab.get("node") == self.node:
                rows.setdefault(lab["instance"], {})[names[name]] = value
        self.rows = rows
        return any(
            r.get("up", 0) > 0
            and r.get("weight", 0) > 0
            and r.get("compute", 1.0) < self.overload
            and r.get("delay_ms", 1e9) <= self.max_delay_ms
            for r in rows.values()
        )

    async def pays_off(self, session: Any) -> bool:
        now = time.monotonic()
        if now - self._at >= self.refresh:
            self._at = now
            import aiohttp

            try:
                async with session.get(self.url) as r:
                    self._pays = self.decide(await r.text())
            except (aiohttp.ClientError, TimeoutError, ValueError):  # unreachable or garbled: the last answer
                self.errors += 1
        return self._pays
