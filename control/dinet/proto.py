"""The generated gRPC code of dinet's .proto files. `scripts/install.sh` generates it with grpcio-tools;
an editable checkout without it generates it here on first use (the same command)."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent


def generate() -> None:
    from grpc_tools import protoc

    for proto in sorted(HERE.glob("*.proto")):
        rc = protoc.main(
            [
                "protoc",
                f"-I{HERE.parent}",
                f"--python_out={HERE.parent}",
                f"--grpc_python_out={HERE.parent}",
                str(proto),
            ]
        )
        if rc != 0:
            raise RuntimeError(f"protoc failed on {proto}")


def _load(name: str) -> tuple[ModuleType, ModuleType]:
    src, out = HERE / f"{name}.proto", [HERE / f"{name}_pb2.py", HERE / f"{name}_pb2_grpc.py"]
    if not all(o.exists() and o.stat().st_mtime >= src.stat().st_mtime for o in out):
        generate()  # missing, or older than the .proto (an updated checkout)
    return importlib.import_module(f"dinet.{name}_pb2"), importlib.import_module(f"dinet.{name}_pb2_grpc")


def metrics() -> tuple[ModuleType, ModuleType]:
    """(metrics_pb2, metrics_pb2_grpc)."""
    return _load("metrics")


def agent() -> tuple[ModuleType, ModuleType]:
    """(agent_pb2, agent_pb2_grpc)."""
    return _load("agent")
