#!/usr/bin/env bash
# Installs dependencies (Debian 12 packages), builds xpd and runs every test.
# This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

.ci/install-deps
build_dir=${XPD_BUILD_DIR:-build}
jobs=${XPD_JOBS:-$(nproc)}

( cd tests/fixtures/dsv3-tiny && sha256sum --quiet -c SHA256SUMS )
( cd tests/fixtures/tokenizer && sha256sum --quiet -c SHA256SUMS )
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build_dir" -j "$jobs"
ctest --test-dir "$build_dir" --output-on-failure -j "$jobs" --timeout 900
# The official openai npm client against the router's HTTP endpoint on a real local cluster.
XPD_BUILD_DIR="$build_dir" tests/openai/run_node_test.sh
# The Python client (common/client/python) against a real local cluster.
XPD_BUILD_DIR="$build_dir" tests/python/run_python_client_test.sh
# Deployment files, offline: Helm chart, manifests, Prometheus and Grafana
# files, Dockerfile, and the README's deploy/monitoring commands.
XPD_BUILD_DIR="$build_dir" tests/deploy/check_deploy.sh
# promtool check metrics on every process's /metrics, and a real Prometheus
# scraping a local cluster, queried with PromQL.
XPD_BUILD_DIR="$build_dir" tests/monitoring/run_monitoring_test.sh
# Tokenizer fuzzers (clang + libFuzzer, separate build), bounded time each.
XPD_JOBS="$jobs" tests/fuzz/run_fuzzers.sh
