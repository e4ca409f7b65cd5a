# dinet: every target installs what it needs first (scripts/install.sh is idempotent: seconds when done).
PY := .venv/bin/python
.PHONY: install demo demo-steering demo-sync test bench fuzz p4 clean

install:
	bash scripts/install.sh

demo: install
	$(PY) -m topo.inference_demo

demo-steering: install
	$(PY) -m topo.steer_demo

demo-sync: install
	$(PY) -m dinet.cli lab sync-demo

test:
	bash scripts/install.sh --test
	bash scripts/run-tests.sh

bench: install
	$(PY) -m bench.xdp_steer --quick
	$(PY) -m bench.burst --quick
	$(PY) -m bench.bier --quick
	$(PY) -m bench.p4rt_writes --quick
	$(PY) -m bench.reaction --quick
	$(PY) -m bench.bier_failover --quick
	$(PY) -m bench.serve --quick
	$(PY) -m bench.modelsync --quick
	$(PY) -m bench.p4_affinity --quick
	$(PY) -m bench.linkem --quick
	$(PY) -m bench.bier_scale --quick
	$(PY) -m bench.bier_vs_tree --quick
	$(PY) -m bench.chaos --quick

fuzz: install
	$(PY) -m bench.fuzz

p4: install
	$(PY) -m dinet.cli p4 compile

clean:
	rm -rf build p4/build .pytest_cache bench/results/*.json
