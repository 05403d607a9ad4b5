#!/usr/bin/env bash
# Runs test_xpd_client.py (the Python client, common/client/python) against a
# real local cluster: `xpd up --model default`, ready line parsed for
# router=HOST:PORT. The stubs are generated into $XPD_BUILD_DIR/python (ignored
# by git). Debian's python3 with python3-grpcio (.ci/install-deps): python3 on
# PATH may be another interpreter without Debian's modules.
set -euo pipefail
cd "$(dirname "$0")/../.."
build_dir=$(realpath -m "${XPD_BUILD_DIR:-build}")
python=${XPD_PYTHON:-/usr/bin/python3}
stubs="$build_dir/python"

rm -rf "$stubs"
common/client/python/generate_stubs.sh "$stubs"

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

# The built-in default model in a private cache. The read returns with the
# ready line, or at EOF if `xpd up` exits first (the timeout only bounds a hang).
exec 3< <(XPD_CACHE_DIR="$work/cache" exec "$build_dir/xpd" up --model default --threads 1 2>"$work/up.err")
up_pid=$!
router=""
if read -r -t 300 line <&3 && [[ $line == ready* ]]; then
  router=$(sed -n 's/^ready router=\([^ ]*\).*/\1/p' <<<"$line")
fi
if [ -z "$router" ]; then
  echo "run_python_client_test: the cluster did not become ready" >&2
  cat "$work/up.err" >&2
  exit 1
fi
echo "run_python_client_test: cluster ready, router=$router"
PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$PWD/common/client/python:$stubs:$PWD/tests/python" XPD_ROUTER="$router" \
  XPD_BIN="$build_dir/xpd" "$python" -m unittest -v test_xpd_client || {
  status=$?
  tail -n 40 "$work/up.err" >&2
  exit $status
}
