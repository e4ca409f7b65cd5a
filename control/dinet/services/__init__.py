"""Long-running services: the collector, the controller, the node agent, probes, Prometheus and `dinet run`."""
