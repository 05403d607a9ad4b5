#!/usr/bin/env bash
# Monitoring of a real local cluster (`xpd up --model default`), two checks:
#
#  1. promtool check metrics: every process's /metrics (controller, prefill,
#     decode, router), fetched after a request so histograms have samples, must
#     pass Prometheus' own linter. Addresses come from the startup lines `xpd up`
#     prints ("listening ROLE=... metrics=HOST:PORT").
#  2. A real Prometheus server (Debian's `prometheus`) scrapes the cluster with
#     deploy/prometheus/prometheus-local.yml (1 s interval, file_sd targets from
#     local-targets.sh, alerts.yml); its HTTP API must then answer PromQL over
#     xpd metrics with the role/rank/model labels (prometheus_checks.py).
#
# The cluster and Prometheus are started with the README's command lines
# ("Monitoring"), run verbatim in a scratch copy of deploy/prometheus with
# build/ pointing at $XPD_BUILD_DIR, Prometheus on a free loopback port with
# temporary storage. Every wait blocks on a startup line or polls with a
# deadline. Prints PASS/FAIL lines and exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
build_dir=$(realpath -m "${XPD_BUILD_DIR:-build}")
python=${XPD_PYTHON:-/usr/bin/python3}
start=$(date +%s)

# The README's command lines (README.md, "Monitoring"), run from the repository root.
readme_up='build/xpd up --model default 2>&1 | deploy/prometheus/local-targets.sh deploy/prometheus/targets/xpd-local.json'
readme_prometheus='prometheus --config.file=deploy/prometheus/prometheus-local.yml --storage.tsdb.path="${XPD_PROMETHEUS_DATA:-/tmp/xpd-prometheus}" --web.listen-address="127.0.0.1:${XPD_PROMETHEUS_PORT:-9090}"'

work=$(mktemp -d)
up_group=""
prometheus_pid=""
cleanup() {
  if [ -n "$prometheus_pid" ] && kill -0 "$prometheus_pid" 2>/dev/null; then
    kill -TERM "$prometheus_pid"
    wait "$prometheus_pid" 2>/dev/null || true
  fi
  # The cluster pipeline runs in its own process group (setsid): xpd up, its
  # processes and local-targets.sh.
  # xpd up stops its ranks before it exits (a few seconds): wait for the
  # group to empty, with a bound.
  if [ -n "$up_group" ] && kill -0 -- "-$up_group" 2>/dev/null; then
    kill -TERM -- "-$up_group" 2>/dev/null || true
    local until=$((SECONDS + 30))
    while kill -0 -- "-$up_group" 2>/dev/null && [ $SECONDS -lt $until ]; do
      sleep 0.1
    done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

failed=0
fail() {
  echo "FAIL  $1"
  failed=1
}

# A scratch repository root: the deploy/prometheus files, build/ -> the build.
root=$work/repo
mkdir -p "$root/deploy/prometheus"
cp deploy/prometheus/prometheus-local.yml deploy/prometheus/alerts.yml deploy/prometheus/local-targets.sh \
  "$root/deploy/prometheus/"
ln -s "$build_dir" "$root/build"

# ---------------------------------------------------------------------------
# The cluster. Its output (stdout and stderr, passed through local-targets.sh)
# is read line by line up to the router's metrics line, then drained to a file.
exec 3< <(cd "$root" && XPD_CACHE_DIR="$work/cache" exec setsid bash -c "$readme_up")
up_group=$!
declare -A metrics=()
router=""
ready_re='^ready router=([^ ]+)'
listening_re='listening ([a-z]+)=[^ ]+ metrics=([^ ]+)'
deadline=$((SECONDS + 300))
while [ -z "${metrics[router]:-}" ]; do
  left=$((deadline - SECONDS))
  if [ $left -le 0 ] || ! IFS= read -r -t "$left" line <&3; then
    echo "FAIL  the cluster did not print its metrics addresses" >&2
    cat "$work/up.log" 2>/dev/null >&2 || true
    exit 1
  fi
  printf '%s\n' "$line" >>"$work/up.log"
  if [[ $line =~ $ready_re ]]; then router=${BASH_REMATCH[1]}; fi
  if [[ $line =~ $listening_re ]]; then
    metrics[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
  fi
done
cat <&3 >>"$work/up.log" &
for role in controller prefill decode router; do
  [ -n "${metrics[$role]:-}" ] || fail "no metrics address of the $role in the output of xpd up"
done
[ -n "$router" ] || fail "no ready line"
echo "cluster ready in $((SECONDS - (deadline - 300))) s: router=$router," \
  "metrics: controller=${metrics[controller]:-?} prefill=${metrics[prefill]:-?} decode=${metrics[decode]:-?} router=${metrics[router]:-?}"

requests=0
send_request() {
  "$build_dir/xpd" generate --router "$router" --tokens 5,17,42 --max-tokens 8 --temperature 0 --format json >/dev/null
  "$build_dir/xpd" generate --router "$router" --prompt "Hello" --max-tokens 4 >/dev/null
  requests=$((requests + 2))
}
send_request

# ---------------------------------------------------------------------------
# 1. promtool check metrics on every process's output.
for role in controller prefill decode router; do
  address=${metrics[$role]:-}
  [ -n "$address" ] || continue
  address=${address/#0.0.0.0:/127.0.0.1:}
  if ! curl -sSf --max-time 10 "http://$address/metrics" -o "$work/$role.metrics" 2>"$work/curl.err"; then
    fail "GET http://$address/metrics ($role): $(cat "$work/curl.err")"
    continue
  fi
  if ! grep -q '^xpd_' "$work/$role.metrics"; then
    fail "$role /metrics has no xpd_ series"
    continue
  fi
  if promtool check metrics <"$work/$role.metrics" >"$work/promtool.out" 2>&1; then
    echo "PASS  promtool check metrics: $role ($address)"
  else
    fail "promtool check metrics: $role ($address):"
    sed -e 's/^/        /' "$work/promtool.out"
  fi
done
echo "promtool checks: $(($(date +%s) - start)) s since start"

# ---------------------------------------------------------------------------
# 2. A real Prometheus server, on a free loopback port. It logs "Server is
# ready to receive web requests." once it serves; a port taken meanwhile makes
# it exit, and another port is tried.
free_port() {
  "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
prometheus_url=""
for attempt in 1 2 3; do
  port=$(free_port)
  exec 4< <(cd "$root" && XPD_PROMETHEUS_PORT=$port XPD_PROMETHEUS_DATA="$work/prometheus-data" \
    exec bash -c "exec $readme_prometheus" 2>&1)
  prometheus_pid=$!
  deadline=$((SECONDS + 60))
  while true; do
    left=$((deadline - SECONDS))
    if [ $left -le 0 ] || ! IFS= read -r -t "$left" line <&4; then
      break
    fi
    printf '%s\n' "$line" >>"$work/prometheus.log"
    if [[ $line == *"Server is ready to receive web requests."* ]]; then
      prometheus_url="http://127.0.0.1:$port"
      break
    fi
  done
  if [ -n "$prometheus_url" ]; then
    cat <&4 >>"$work/prometheus.log" &
    break
  fi
  kill -TERM "$prometheus_pid" 2>/dev/null || true
  wait "$prometheus_pid" 2>/dev/null || true
  prometheus_pid=""
done
if [ -z "$prometheus_url" ]; then
  fail "prometheus did not become ready"
  tail -n 30 "$work/prometheus.log" >&2 || true
  exit 1
fi
echo "prometheus ready at $prometheus_url ($(prometheus --version 2>&1 | head -n 1 | cut -d' ' -f1-3))"

# Traffic while it scrapes, then PromQL over what it collected.
send_request
if "$python" tests/monitoring/prometheus_checks.py "$prometheus_url" "$requests"; then
  :
else
  fail "PromQL checks against the scraped cluster"
  echo "--- prometheus log (last 30 lines)"
  tail -n 30 "$work/prometheus.log" || true
fi

echo "run_monitoring_test: $(($(date +%s) - start)) s"
if [ $failed -ne 0 ]; then
  echo "--- xpd up output (last 40 lines)"
  tail -n 40 "$work/up.log" || true
  exit 1
fi
echo "all monitoring checks passed"
