#!/usr/bin/env bash
# Builds the tokenizer's libFuzzer targets with clang (ASan + UBSan) in their
# own build directory and runs each for a bounded time, starting from seeds
# written from the fixtures. A crash, sanitizer report or violated property
# fails the script; the input that caused it is kept under
# $build_dir/fuzz-artifacts/.
#   XPD_FUZZ_SECONDS   time per target (default 30)
#   XPD_FUZZ_BUILD_DIR build directory (default build-fuzz)
#   XPD_JOBS           build parallelism (default: all cores)
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${XPD_FUZZ_SECONDS:-30}
build_dir=${XPD_FUZZ_BUILD_DIR:-build-fuzz}
jobs=${XPD_JOBS:-$(nproc)}

CC=clang CXX=clang++ cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DXPD_FUZZ=ON -DXPD_BUILD_BENCHMARKS=OFF -DXPD_ENABLE_CUDA=OFF >/dev/null
cmake --build "$build_dir" -j "$jobs" \
  --target tokenizer_encode_fuzz tokenizer_json_fuzz tokenizer_fuzz_seeds

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
artifacts="$build_dir/fuzz-artifacts"
mkdir -p "$artifacts"
"$build_dir/tests/fuzz/tokenizer_fuzz_seeds" tests/fixtures/tokenizer "$work/encode" "$work/json"

# libFuzzer's progress lines go to a log; it is shown whole only on failure.
run() {
  local target=$1
  shift
  local log="$build_dir/fuzz-$target.log"
  echo "fuzz: $target for ${seconds}s (log: $log)"
  if ! "$build_dir/tests/fuzz/$target" -max_total_time="$seconds" -timeout=30 \
      -rss_limit_mb=4096 -print_final_stats=1 -print_funcs=0 \
      -artifact_prefix="$artifacts/$target-" "$@" >"$log" 2>&1; then
    tail -n 200 "$log"
    echo "fuzz: $target FAILED; reproduce with: $build_dir/tests/fuzz/$target $artifacts/$target-*"
    return 1
  fi
  grep -E '^(Done|stat::(number_of_executed_units|new_units_added|peak_rss_mb))' "$log"
}
run tokenizer_encode_fuzz -max_len=4096 "$work/encode"
run tokenizer_json_fuzz -max_len=65536 -dict=tests/fuzz/tokenizer_json.dict "$work/json"
echo "fuzz: no crashes"
