#!/usr/bin/env bash
# Generates the Python gRPC modules of proto/xpd/v1/generation.proto into
# OUT_DIR (OUT_DIR/xpd/v1/generation_pb2.py and generation_pb2_grpc.py), which
# xpd_client imports; put OUT_DIR on PYTHONPATH beside common/client/python.
#
#   common/client/python/generate_stubs.sh build/python
#
# Uses Debian's protoc (protobuf-compiler 3.21) and grpc_python_plugin
# (protobuf-compiler-grpc 1.51), the same compilers as the C++ build. Debian's
# python3-grpc-tools cannot be used: its bundled protoc (3.5) rejects the
# proto3 `optional` fields of generation.proto. Generated code is never
# committed.
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 OUT_DIR" >&2
  exit 2
fi
out=$1
repo=$(cd "$(dirname "$0")/../../.." && pwd)
plugin=$(command -v grpc_python_plugin) || {
  echo "generate_stubs: grpc_python_plugin not found (Debian: protobuf-compiler-grpc)" >&2
  exit 1
}
mkdir -p "$out"
protoc -I"$repo/proto" --python_out="$out" --grpc_out="$out" --plugin=protoc-gen-grpc="$plugin" \
  "$repo/proto/xpd/v1/generation.proto"
