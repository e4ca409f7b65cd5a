# dinet: every target installs what it needs first (scripts/install.sh is idempotent: seconds when done).
PY := .venv/bin/python
.PHONY: install demo demo-steering demo-sync test bench fuzz p4 clean

install:
	bash scripts/install.sh

demo: install
	$(PY) topo/inference_demo.py

demo-steering: install
	$(PY) topo/steer_demo.py

demo-sync: install
	$(PY) -m dinet.lab.model_sync

test:
	bash scripts/install.sh --test
	bash scripts/run-tests.sh

bench: install
	$(PY) bench/xdp_steer.py --quick
	$(PY) bench/bier.py --quick
	$(PY) bench/p4rt_writes.py --quick
	$(PY) bench/reaction.py --quick
	$(PY) bench/bier_failover.py --quick
	$(PY) bench/serve.py --quick
	$(PY) bench/modelsync.py --quick
	$(PY) bench/p4_affinity.py --quick
	$(PY) bench/linkem.py --quick
	$(PY) bench/bier_scale.py --quick

fuzz: install
	$(PY) bench/fuzz.py

p4: install
	$(PY) -m dinet.cli p4 compile

clean:
	rm -rf build p4/build .pytest_cache bench/results/*.json
