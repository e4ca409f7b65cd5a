"""Pure policy: no kernel, no switch, no network. Maglev rings, the steering plan, weight decisions,
CATS scores and BIFTs, computed from the model alone."""
