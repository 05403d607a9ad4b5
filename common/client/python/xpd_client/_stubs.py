"""The generated modules of proto/xpd/v1/generation.proto.

They are generated at build time (common/client/python/generate_stubs.sh DIR),
never committed, and found on sys.path or in $XPD_CLIENT_STUBS.
"""

import os
import sys

_stubs_dir = os.environ.get("XPD_CLIENT_STUBS")
if _stubs_dir and _stubs_dir not in sys.path:
    sys.path.insert(0, _stubs_dir)

try:
    from xpd.v1 import generation_pb2, generation_pb2_grpc
except ImportError as error:  # pragma: no cover - a setup problem, said clearly
    raise ImportError(
        "xpd_client needs the Python modules generated from proto/xpd/v1/generation.proto: "
        "run `common/client/python/generate_stubs.sh DIR` and put DIR on PYTHONPATH "
        "(or set XPD_CLIENT_STUBS=DIR)"
    ) from error

__all__ = ["generation_pb2", "generation_pb2_grpc"]
