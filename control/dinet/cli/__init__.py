"""`dinet`: the command line over the data planes, one module per command group, each a thin call into the
layer that does the work. Every error is one readable line and exit status 1."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from ..errors import DinetError
from . import bier, certs, control, lab, p4, steer, sync, workload
from .lab import EXPERIMENTS

__all__ = ["EXPERIMENTS", "build_parser", "main"]

GROUPS = (steer, bier, control, p4, workload, sync, lab, certs)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dinet", description="Computing-aware steering and BIER on XDP and BMv2")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for group in GROUPS:
        group.register(sub)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    if not a.verbose:  # gRPC's core logs its own copy of errors dinet reports in one line
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    stamp = "%(asctime)s " if os.environ.get("DINET_LOG_TIME") else ""  # a lab's services: logs line up in time
    logging.basicConfig(
        level=logging.DEBUG if a.verbose else logging.WARNING, format=f"{stamp}%(levelname)s %(name)s: %(message)s"
    )
    try:
        a.fn(a)
    except DinetError as e:
        print(f"dinet: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as e:  # a file, socket or device the user named
        print(f"dinet: {e.strerror or e}{f': {e.filename}' if e.filename else ''}", file=sys.stderr)
        return 1
    except Exception as e:  # a bug: one line, and the traceback on request
        if os.environ.get("DINET_DEBUG"):
            raise
        print(f"dinet: internal error ({type(e).__name__}: {e}); DINET_DEBUG=1 shows the traceback", file=sys.stderr)
        return 2
    return 0
