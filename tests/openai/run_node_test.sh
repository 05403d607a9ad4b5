#!/usr/bin/env bash
# Runs openai_client_test.mjs (the official openai npm client, pinned in
# package-lock.json) against a real local cluster: `xpd up --model default
# --http-port 0 --api-key KEY`, ready line parsed for http=HOST:PORT.
# The client is installed with `npm ci` into $XPD_BUILD_DIR/openai-node (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/../.."
build_dir=${XPD_BUILD_DIR:-build}
here=tests/openai
node_dir="$build_dir/openai-node"

mkdir -p "$node_dir"
cp "$here/package.json" "$here/package-lock.json" "$here/openai_client_test.mjs" "$node_dir/"
if ! cmp -s "$here/package-lock.json" "$node_dir/node_modules/.package-lock.json.xpd" 2>/dev/null; then
  ( cd "$node_dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error )
  cp "$here/package-lock.json" "$node_dir/node_modules/.package-lock.json.xpd"
fi

source tests/lib/xpd_up.sh
key="xpd-test-$RANDOM$RANDOM"
xpd_up run_node_test "$build_dir" --http-port 0 --api-key "$key" --threads 1
http=$(sed -n 's/.* http=\([^ ]*\).*/\1/p' <<<"$xpd_up_ready")
echo "run_node_test: cluster ready, http=$http"
( cd "$node_dir" && XPD_HTTP="$http" XPD_API_KEY="$key" node --test openai_client_test.mjs ) || {
  status=$?
  tail -n 40 "$xpd_up_work/up.err" >&2
  exit $status
}
