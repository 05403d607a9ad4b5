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

work=$(mktemp -d)
up_pid=""
cleanup() {
  if [ -n "$up_pid" ] && kill -0 "$up_pid" 2>/dev/null; then
    kill -TERM "$up_pid"
    wait "$up_pid" || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

key="xpd-test-$RANDOM$RANDOM"
# The built-in default model (DeepSeek-V3 tokenizer, dummy weights) in a private cache.
# Its stdout is read directly: the read returns with the ready line, or at EOF
# if `xpd up` exits first (the timeout only bounds a hang).
exec 3< <(XPD_CACHE_DIR="$work/cache" exec "$build_dir/xpd" up --model default --http-port 0 \
  --api-key "$key" --threads 1 2>"$work/up.err")
up_pid=$!
http=""
if read -r -t 300 line <&3 && [[ $line == ready* ]]; then
  http=$(sed -n 's/.* http=\([^ ]*\).*/\1/p' <<<"$line")
fi
if [ -z "$http" ]; then
  echo "run_node_test: the cluster did not become ready" >&2
  cat "$work/up.err" >&2
  exit 1
fi
echo "run_node_test: cluster ready, http=$http"
( cd "$node_dir" && XPD_HTTP="$http" XPD_API_KEY="$key" node --test openai_client_test.mjs ) || {
  status=$?
  tail -n 40 "$work/up.err" >&2
  exit $status
}
