"""The generated gRPC stubs, imported on first use with a clear error when missing.

The stubs are generated from ``src/vfioctl/dra/proto`` by ``tools/gen-proto.sh`` at
setup time (they are not tracked); an installation without them, or without the
``dra`` extra (grpcio, protobuf), gets one line saying what to run instead of a
traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from vfioctl import UnsupportedConfig

_MODULES = ("pluginregistration_v1_pb2", "pluginregistration_v1_pb2_grpc",
            "dra_v1_pb2", "dra_v1_pb2_grpc", "dra_v1beta1_pb2", "dra_v1beta1_pb2_grpc")


def stub(name: str) -> ModuleType:
    """``vfioctl.dra.gen.<name>``.

    Raises:
        UnsupportedConfig: grpcio/protobuf missing, or the stubs were not generated.
    """
    if name not in _MODULES:
        raise KeyError(name)
    try:
        importlib.import_module("grpc")
        importlib.import_module("google.protobuf")
    except ImportError:
        raise UnsupportedConfig(
            "the DRA driver needs grpcio and protobuf",
            hint="install vfioctl with the 'dra' extra (pip install 'vfioctl[dra]')"
        ) from None
    try:
        return importlib.import_module(f"vfioctl.dra.gen.{name}")
    except ImportError:
        raise UnsupportedConfig(
            "the DRA driver's gRPC stubs are not generated",
            hint="run tools/gen-proto.sh (needs grpcio-tools)") from None


__all__ = ["stub"]
