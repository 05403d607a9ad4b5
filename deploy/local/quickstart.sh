#!/usr/bin/env bash
# The README's main command: installs dependencies, builds xpd, writes the
# built-in default model (DUMMY random weights with DeepSeek-V3's real
# architecture and vocabulary size) and answers a real generation request on it.
set -euo pipefail
cd "$(dirname "$0")/../.."

.ci/install-deps
build_dir=${XPD_BUILD_DIR:-build}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build_dir" -j "$(nproc)" --target xpd

model_dir="$build_dir/models/default"
if [ ! -f "$model_dir/config.json" ]; then
  "$build_dir/xpd" dummy-model --preset default --out "$model_dir"
fi
echo "+ xpd generate --model $model_dir --tokens 0,5,17,42 --max-tokens 16 --temperature 0"
"$build_dir/xpd" generate --model "$model_dir" --tokens 0,5,17,42 --max-tokens 16 --temperature 0
