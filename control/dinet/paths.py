"""Where dinet finds its data-plane sources and keeps its pinned objects."""

import os
from pathlib import Path

#: ebpf/ of the source tree (dinet is installed editable from it); DINET_EBPF_DIR overrides.
EBPF_DIR = Path(os.environ.get("DINET_EBPF_DIR") or Path(__file__).resolve().parents[2] / "ebpf")
#: p4/ of the source tree; DINET_P4_DIR overrides.
P4_DIR = Path(os.environ.get("DINET_P4_DIR") or Path(__file__).resolve().parents[2] / "p4")
#: bpffs folder under which each node keeps its maps: BPFFS_ROOT/<node>/<program>/<map>.
BPFFS_ROOT = Path(os.environ.get("DINET_BPFFS_ROOT", "/sys/fs/bpf/dinet"))
