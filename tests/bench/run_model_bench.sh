#!/usr/bin/env bash
# Engine benchmark (not a test): prefill and decode tokens/s, peak memory and
# the fraction of the memory-bandwidth bound on the `small` preset (dummy
# weights, BF16 unless XPD_BENCH_DTYPE=fp8), at batch 1 and 16 with 2
# threads. Bandwidth is measured by every run itself, since it drifts between
# runs on shared machines.
#   usage: tests/bench/run_model_bench.sh [BUILD_DIR] [MODEL_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
build_dir=${1:-build}
dtype=${XPD_BENCH_DTYPE:-bf16}
case "$dtype" in
  bf16) default_model=${TMPDIR:-/tmp}/xpd-small-preset ;;
  fp8) default_model=${TMPDIR:-/tmp}/xpd-small-fp8 ;;
  *) echo "XPD_BENCH_DTYPE must be bf16 or fp8" >&2; exit 2 ;;
esac
model_dir=${2:-$default_model}
threads=${XPD_BENCH_THREADS:-2}
compute=${XPD_BENCH_COMPUTE:-bf16}

cmake --build "$build_dir" --target xpd >/dev/null
if [ ! -f "$model_dir/config.json" ]; then
  "$build_dir/xpd" dummy-model --preset small --dtype "$dtype" --out "$model_dir"
fi
printf '%-6s %-7s %-5s %12s %12s %9s %10s %9s\n' batch prompt gen prefill_tok/s decode_tok/s "%bound" "GB/s" "RSS GiB"
for batch in 1 16; do
  for shape in "128 64" "512 128"; do
    set -- $shape
    json=$("$build_dir/xpd" bench --model "$model_dir" --prompt-tokens "$1" --gen-tokens "$2" \
      --batch "$batch" --threads "$threads" --compute "$compute" --format json 2>/dev/null)
    python3 - "$batch" "$1" "$2" "$json" <<'PY'
import json, sys
b, p, g, j = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
print(f"{b:<6} {p:<7} {g:<5} {j['prefill_tokens_per_s']:12.1f} {j['decode_tokens_per_s']:12.1f} "
      f"{100*j['decode_fraction_of_bound']:8.0f}% {j['bandwidth_bytes_per_s']/1e9:10.1f} "
      f"{j['peak_rss_bytes']/2**30:9.2f}")
PY
  done
done
