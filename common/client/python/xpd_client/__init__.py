"""Python client of an xpd cluster (the router's xpd.v1.Generation API).

    from xpd_client import Client, XpdError

    with Client("127.0.0.1:50051") as xpd:
        print(xpd.generate("Hello", max_tokens=16, temperature=0).text)
        for chunk in xpd.generate_stream([5, 17, 42], max_tokens=8):
            print(chunk.token_ids, chunk.text)
        answer = xpd.chat([{"role": "user", "content": "Hi!"}], max_tokens=32)
        try:
            xpd.generate([10**9], max_tokens=1)
        except XpdError as error:
            print(error.code.name, error.details)  # INVALID_ARGUMENT ...

Needs grpcio and protobuf (Debian: python3-grpcio, python3-protobuf) and the
modules generated from proto/xpd/v1/generation.proto by
common/client/python/generate_stubs.sh (on PYTHONPATH or in $XPD_CLIENT_STUBS).
"""

from .client import (
    Chunk,
    Client,
    Completion,
    GenerationStream,
    Model,
    TokenLogprob,
    XpdError,
)

__all__ = [
    "Chunk",
    "Client",
    "Completion",
    "GenerationStream",
    "Model",
    "TokenLogprob",
    "XpdError",
]
