#!/usr/bin/env bash
# The whole test suite, as `make test` runs it. Extra arguments go to pytest.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
exec .venv/bin/python -m pytest -p no:cacheprovider -ra --durations=30 "$@"
