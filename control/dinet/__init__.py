"""dinet: computing-aware steering and BIER replication on XDP and BMv2."""

import os
import sys


def _unshadow_protobuf() -> None:
    """BMv2's bundle may put its own Python packages on python3's path (a `.pth` naming a site-packages that
    holds a regular `google` package with only google.rpc, and an older `p4`). A regular package wins over
    the namespace package protobuf installs into, so `google.protobuf` would vanish from this environment.
    dinet takes protobuf and the P4Runtime messages from its own environment: drop such entries."""
    for entry in list(sys.path):
        google = os.path.join(entry, "google")
        if os.path.isfile(os.path.join(google, "__init__.py")) and not os.path.isdir(os.path.join(google, "protobuf")):
            sys.path.remove(entry)
            for name, mod in list(sys.modules.items()):  # already imported from there: forget it
                if (name == "google" or name.startswith(("google.", "p4."))) and (
                    getattr(mod, "__file__", None) or ""
                ).startswith(entry):
                    del sys.modules[name]


_unshadow_protobuf()
