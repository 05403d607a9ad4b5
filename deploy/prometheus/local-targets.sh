#!/usr/bin/env bash
# Writes a Prometheus file_sd targets file from xpd startup lines.
#
# Every xpd process prints "listening <role>=HOST:PORT metrics=HOST:PORT" once
# it serves; `xpd up` relays those lines on stderr. Pipe them through this
# script, which passes every line on unchanged and rewrites TARGETS.json
# (atomically) whenever a new metrics address appears:
#
#   build/xpd up --model default 2>&1 | deploy/prometheus/local-targets.sh deploy/prometheus/targets/xpd-local.json
#
# prometheus-local.yml reads targets/*.json and picks up changes by itself.
# Addresses bound to 0.0.0.0 are scraped on 127.0.0.1.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: <xpd output> | $0 TARGETS.json" >&2
  exit 2
fi
out=$1
mkdir -p "$(dirname "$out")"
targets=()

write_targets() {
  local tmp="$out.tmp.$$" sep="" t
  {
    printf '[\n  {\n    "targets": ['
    for t in "${targets[@]+"${targets[@]}"}"; do
      printf '%s"%s"' "$sep" "$t"
      sep=", "
    done
    printf '],\n    "labels": {"cluster": "local"}\n  }\n]\n'
  } >"$tmp"
  mv -f "$tmp" "$out"
}

write_targets
while IFS= read -r line || [ -n "$line" ]; do
  printf '%s\n' "$line"
  case "$line" in
    *"listening "*" metrics="*)
      addr=${line##* metrics=}
      addr=${addr%% *}
      case "$addr" in
        0.0.0.0:*) addr="127.0.0.1:${addr#0.0.0.0:}" ;;
        "[::]:"*) addr="[::1]:${addr#\[::\]:}" ;;
      esac
      targets+=("$addr")
      write_targets
      ;;
  esac
done
