# Sourced by the client tests: starts `xpd up --model default` (a private
# model cache under a temp dir) and waits for its ready line, which the read
# returns with, or at EOF if `xpd up` exits first (the timeout only bounds a
# hang). Stops the cluster and removes the temp dir on exit.
#   xpd_up NAME BUILD_DIR [xpd up flags...]
# Sets: xpd_up_work (temp dir; stderr in $xpd_up_work/up.err), xpd_up_ready
# (the ready line). Exits 1 with the cluster's stderr if it never got ready.

xpd_up_pid=""
xpd_up_work=$(mktemp -d)
xpd_up_cleanup() {
  if [ -n "$xpd_up_pid" ] && kill -0 "$xpd_up_pid" 2>/dev/null; then
    kill -TERM "$xpd_up_pid"
    wait "$xpd_up_pid" || true
  fi
  rm -rf "$xpd_up_work"
}
trap xpd_up_cleanup EXIT

xpd_up() {
  local name=$1 build_dir=$2
  shift 2
  exec 3< <(XPD_CACHE_DIR="$xpd_up_work/cache" exec "$build_dir/xpd" up --model default "$@" \
    2>"$xpd_up_work/up.err")
  xpd_up_pid=$!
  xpd_up_ready=""
  if ! read -r -t 300 xpd_up_ready <&3 || [[ $xpd_up_ready != ready* ]]; then
    echo "$name: the cluster did not become ready" >&2
    cat "$xpd_up_work/up.err" >&2
    exit 1
  fi
}
