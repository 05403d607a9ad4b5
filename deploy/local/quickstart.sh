#!/usr/bin/env bash
# The README's main command: installs dependencies, builds xpd, starts a local
# cluster (controller, prefill rank, decode rank, router: separate processes
# on loopback) on the built-in default model — DeepSeek-V3's architecture and
# tokenizer with DUMMY random weights — and answers a real request through it.
# The cluster keeps serving until Ctrl-C (XPD_QUICKSTART_EXIT=1: stop at once).
set -euo pipefail
cd "$(dirname "$0")/../.."

.ci/install-deps
build_dir=${XPD_BUILD_DIR:-build}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build_dir" -j "$(nproc)" --target xpd

echo "+ xpd up --model default --prefill-ranks 1 --decode-ranks 1"
exec 3< <(exec "$build_dir/xpd" up --model default --prefill-ranks 1 --decode-ranks 1)
cluster=$!
trap 'kill -TERM $cluster 2>/dev/null; wait $cluster 2>/dev/null' EXIT
read -r -t 600 ready <&3 || { echo "the cluster did not start" >&2; exit 1; }
router=${ready#ready router=}
echo "$ready"

echo "+ xpd generate --router $router --prompt 'The capital of France is' --max-tokens 24 --temperature 0"
"$build_dir/xpd" generate --router "$router" --prompt "The capital of France is" \
  --max-tokens 24 --temperature 0
echo "+ xpd generate --router $router --tokens 0,5,17,42 --max-tokens 8 --temperature 0 --format json"
"$build_dir/xpd" generate --router "$router" --tokens 0,5,17,42 --max-tokens 8 --temperature 0 \
  --format json
echo "(dummy weights: the text is meaningless; point --model at a real checkpoint for real text)"

if [ "${XPD_QUICKSTART_EXIT:-0}" = 1 ]; then exit 0; fi
echo "the cluster is serving at $router; Ctrl-C stops it"
wait $cluster
