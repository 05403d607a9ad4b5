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

source tests/lib/xpd_up.sh
xpd_up run_python_client_test "$build_dir" --threads 1
router=$(sed -n 's/^ready router=\([^ ]*\).*/\1/p' <<<"$xpd_up_ready")
echo "run_python_client_test: cluster ready, router=$router"
PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$PWD/common/client/python:$stubs:$PWD/tests/python" XPD_ROUTER="$router" \
  XPD_BIN="$build_dir/xpd" "$python" -m unittest -v test_xpd_client || {
  status=$?
  tail -n 40 "$xpd_up_work/up.err" >&2
  exit $status
}
