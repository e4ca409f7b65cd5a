"""The Prometheus endpoint: traffic per service and instance, current weights, metric freshness, decision
latency and refused reports by reason, read at scrape time from the controller, collector and data plane."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector as PromCollector

from .collect import Collector
from .controller import Controller


class DinetMetrics(PromCollector):
    """One controller per ingress node (labelled node="0", "1", ... in the order given) and the collector."""

    def __init__(
        self,
        controllers: Controller | list[Controller],
        collector: Collector | None = None,
        insecure: bool = False,
        nodes: list[str] | None = None,
    ):
        """nodes: each controller's node label (default "0", "1", ...: a decider of one node of a distributed
        intent labels with that node's index in the intent)."""
        self.controllers = controllers if isinstance(controllers, list) else [controllers]
        self.collector = collector
        self.insecure = insecure
        self.nodes = nodes or [str(n) for n in range(len(self.controllers))]

    def collect(self) -> Iterator[Any]:
        labels = ["node", "service", "instance"]
        weight = GaugeMetricFamily("dinet_instance_weight", "Installed steering weight", labels=labels)
        up = GaugeMetricFamily("dinet_instance_up", "1 if the instance takes new flows", labels=labels)
        serving = GaugeMetricFamily(
            "dinet_instance_in_service",
            "1 if the instance is in service (up, its last report healthy; its weight may still be 0)",
            labels=labels,
        )
        pkts = CounterMetricFamily("dinet_instance_packets", "Packets steered to the instance", labels=labels)
        flows = CounterMetricFamily("dinet_instance_new_flows", "Flows placed on the instance", labels=labels)
        sessions = CounterMetricFamily(
            "dinet_instance_session_flows", "New flows that found their session's instance", labels=labels
        )
        placed = CounterMetricFamily("dinet_instance_sessions", "Sessions placed on the instance", labels=labels)
        replaced = CounterMetricFamily(
            "dinet_instance_sessions_replaced", "Sessions placed again on the instance (theirs had left)", labels=labels
        )
        compute = GaugeMetricFamily(
            "dinet_instance_compute", "Level 1 compute score of the last report (0 idle .. 1 full)", labels=labels
        )
        delay = GaugeMetricFamily(
            "dinet_instance_path_delay_ms", "Round-trip delay from the ingress node to the site", labels=labels
        )
        count, seconds, writes = 0, 0.0, 0
        strategy = GaugeMetricFamily(
            "dinet_service_strategy",
            "1 for the placement strategy the service runs",
            labels=["node", "service", "strategy"],
        )
        errors = CounterMetricFamily(
            "dinet_controller_errors", "Writes the data plane refused or could not take, retried", labels=["node"]
        )
        failing = GaugeMetricFamily(
            "dinet_controller_failing", "1 while the node's data plane is away (resync pending)", labels=["node"]
        )
        placement = GaugeMetricFamily(
            "dinet_service_placement",
            "1 for how the service's new flows are placed (flow: by the 5-tuple; session: by the session key; "
            "two-choices: the lower loaded of two ring candidates)",
            labels=["node", "service", "placement"],
        )
        for n, c in zip(self.nodes, self.controllers, strict=True):
            errors.add_metric([n], c.errors)
            failing.add_metric([n], int(c.failing))
            for intent in c.services:
                strategy.add_metric([n, str(intent.key), (intent.strategy or c.policy.strategy).value], 1)
                placement.add_metric([n, str(intent.key), intent.placement], 1)
            for row in c.status():
                values = [n, row["service"], str(row["instance"])]
                weight.add_metric(values, row["weight"])
                up.add_metric(values, 1 if row["state"] == "up" and row["weight"] > 0 else 0)
                serving.add_metric(values, 1 if row["state"] == "up" and row["healthy"] is not False else 0)
                if row["packets"] is not None:  # None: the data plane is away (its counters unknown)
                    pkts.add_metric(values, row["packets"])
                    flows.add_metric(values, row["new_flows"])
                    sessions.add_metric(values, row["session_flows"])
                    placed.add_metric(values, row["sessions"])
                    replaced.add_metric(values, row["sessions_replaced"])
                delay.add_metric(values, row["delay_ms"])
                if row["compute"] is not None:
                    compute.add_metric(values, row["compute"])
            count += c.decisions
            seconds += c.decision_seconds
            writes += c.writes
        yield from (weight, up, serving, pkts, flows, sessions, placed, replaced, compute, delay, strategy, placement)
        yield from (errors, failing)
        yield SummaryMetricFamily(
            "dinet_decision_seconds",
            "Time to decide and install a service's weights",
            count_value=count,
            sum_value=seconds,
        )
        yield CounterMetricFamily("dinet_datapath_writes", "Writes of instance sets to the data plane", value=writes)
        yield GaugeMetricFamily(
            "dinet_insecure", "1 if the control channels run without TLS (--insecure)", value=int(self.insecure)
        )
        if self.collector is not None:
            now = self.collector.clock()
            age = GaugeMetricFamily(
                "dinet_metric_age_seconds", "Seconds since the instance's last report", labels=["service", "instance"]
            )
            lb = ["service", "instance"]
            coop = [  # cooperative inference at the partner instances (their agents' last reports)
                (GaugeMetricFamily("dinet_instance_verify_rounds_per_s", "Speculative rounds verified per second",
                                   labels=lb), "verify_rounds_per_s"),
                (GaugeMetricFamily("dinet_instance_spec_acceptance", "Share of drafted tokens accepted",
                                   labels=lb), "spec_acceptance"),
                (GaugeMetricFamily("dinet_instance_activation_bytes_per_s",
                                   "Split inference: activation bytes taken from heads per second", labels=lb),
                 "activation_bytes_per_s"),
            ]  # fmt: skip
            for (svc, iid), sample in sorted(self.collector.latest.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
                age.add_metric([str(svc), str(iid)], now - sample.at)
                for family, name in coop:
                    family.add_metric([str(svc), str(iid)], getattr(sample.metrics, name))
            yield age
            yield from (family for family, _ in coop)
            rej = CounterMetricFamily("dinet_reports_rejected", "Metric reports refused", labels=["reason"])
            for reason, count in sorted(self.collector.rejected.items()):
                rej.add_metric([reason], count)
            yield rej
            yield CounterMetricFamily(
                "dinet_reports_accepted", "Metric reports accepted", value=self.collector.accepted
            )


def registry(
    controllers: Controller | list[Controller],
    collector: Collector | None = None,
    insecure: bool = False,
    nodes: list[str] | None = None,
) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(DinetMetrics(controllers, collector, insecure, nodes))
    return reg


def serve(reg: CollectorRegistry, port: int, addr: str = "127.0.0.1") -> Any:
    """Starts the HTTP endpoint; returns (server, thread) for shutdown."""
    return start_http_server(port, addr=addr, registry=reg)
