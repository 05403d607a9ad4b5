#!/usr/bin/env node
// Validates rendered Kubernetes manifests (helm template / kubectl kustomize
// output) without a cluster. Used by tests/deploy/check_deploy.sh.
//
//   node validate_k8s.js --ts-out FILE.ts [--repo DIR] [--compare A.yaml B.yaml] NAME=FILE.yaml ...
//
// For every object of every file:
//   1. schema: the kubernetes-models class of its apiVersion/kind validates
//      types, enums and required fields (ServiceMonitor through
//      @kubernetes-models/prometheus-operator); unknown kinds fail.
//   2. fields: the object is written to --ts-out typed as the package's
//      I<Kind> interface; `tsc --noEmit` on that file (run by the caller)
//      rejects unknown or misspelled fields, which schema validation allows.
//   3. topology: the xpd shape and its cross-references: router, controller
//      Deployments and prefill/decode StatefulSets with their Services (headless
//      for ranks), selectors that match pod labels, named ports, probes on the
//      gRPC port, volumes, ConfigMaps, ServiceAccounts and RBAC that exist,
//      PodDisruptionBudgets that select something, --controller naming the
//      controller Service, and the rank command deriving --rank.
//   4. flags (--repo DIR): every --flag a container passes to an xpd binary
//      (args and the rank entrypoint script) is one that binary's sources
//      parse, so a renamed flag cannot slip through.
// --compare A B: after normalisation (Helm bookkeeping labels, namespaces and
// the controller's FQDN), the two renders hold the same objects; this keeps
// deploy/k8s in step with helm/xpd's default values.
"use strict";

const fs = require("fs");
const path = require("path");
const YAML = require("yaml");

const failures = [];
const fail = (where, msg) => failures.push(`${where}: ${msg}`);

// ---------------------------------------------------------------------------
function loadDocs(file) {
  const text = fs.readFileSync(file, "utf8");
  const docs = YAML.parseAllDocuments(text, { uniqueKeys: true, strict: true });
  const objects = [];
  for (const doc of docs) {
    if (doc.errors.length) {
      for (const e of doc.errors) fail(file, `YAML: ${e.message}`);
      continue;
    }
    const obj = doc.toJSON();
    if (obj === null || obj === undefined) continue;
    objects.push(obj);
  }
  return objects;
}

function modelModule(apiVersion) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group === "monitoring.coreos.com") {
    return `@kubernetes-models/prometheus-operator/${group}/${version}`;
  }
  return group ? `kubernetes-models/${group}/${version}` : `kubernetes-models/${version}`;
}

function schemaCheck(where, obj, tsLines, tsImports) {
  if (!obj.apiVersion || !obj.kind) return fail(where, "missing apiVersion or kind");
  if (!obj.metadata || !obj.metadata.name) return fail(where, "missing metadata.name");
  const mod = modelModule(obj.apiVersion);
  let Kind;
  try {
    Kind = require(mod)[obj.kind];
  } catch (e) {
    return fail(where, `no model for ${obj.apiVersion} (${e.code || e.message})`);
  }
  if (typeof Kind !== "function") return fail(where, `no model for ${obj.apiVersion} ${obj.kind}`);
  try {
    new Kind(JSON.parse(JSON.stringify(obj))).validate();
  } catch (e) {
    const details = (e.errors || []).map((x) => `${x.instancePath || "/"} ${x.message}`).join("; ");
    fail(where, `schema: ${details || e.message}`);
  }
  const alias = `${obj.kind}_${Object.keys(tsImports).length}`;
  const key = `${mod}#${obj.kind}`;
  if (!tsImports[key]) tsImports[key] = { mod, kind: obj.kind, alias };
  tsLines.push(`// ${where}`);
  tsLines.push(`export const o${tsLines.length}: ${tsImports[key].alias} = ${JSON.stringify(obj, null, 2)};`);
}

// ---------------------------------------------------------------------------
const podSpecOf = (o) => (o.spec && o.spec.template && o.spec.template.spec) || null;
const podLabelsOf = (o) => (o.spec && o.spec.template && o.spec.template.metadata && o.spec.template.metadata.labels) || {};
const matches = (selector, labels) =>
  Object.keys(selector || {}).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);
const isWorkload = (o) => ["Deployment", "StatefulSet"].includes(o.kind);
const component = (o) => (o.metadata.labels || {})["app.kubernetes.io/component"];

function topologyCheck(name, objects) {
  const by = (kind) => objects.filter((o) => o.kind === kind);
  const find = (kind, n) => objects.find((o) => o.kind === kind && o.metadata.name === n);
  const workloads = objects.filter(isWorkload);
  const where = (o) => `${name}: ${o.kind}/${o.metadata.name}`;

  // The xpd shape: one workload of the right kind per component.
  const expected = { router: "Deployment", controller: "Deployment", prefill: "StatefulSet", decode: "StatefulSet" };
  for (const [comp, kind] of Object.entries(expected)) {
    const w = workloads.filter((o) => component(o) === comp);
    if (w.length !== 1 || w[0].kind !== kind) {
      fail(name, `expected one ${kind} for component ${comp}, found ${w.map((o) => o.kind).join(",") || "none"}`);
      continue;
    }
    const svc = by("Service").filter((s) => matches(s.spec.selector, podLabelsOf(w[0])));
    if (svc.length === 0) fail(where(w[0]), "no Service selects its pods");
    if (kind === "StatefulSet") {
      const headless = find("Service", w[0].spec.serviceName);
      if (!headless) fail(where(w[0]), `serviceName ${w[0].spec.serviceName} is not a Service here`);
      else if (headless.spec.clusterIP !== "None") fail(where(w[0]), `Service ${headless.metadata.name} is not headless`);
      else if (!matches(headless.spec.selector, podLabelsOf(w[0])))
        fail(where(w[0]), `headless Service ${headless.metadata.name} does not select its pods`);
    }
    if (comp !== "controller" && !by("PodDisruptionBudget").some((p) => matches(p.spec.selector.matchLabels, podLabelsOf(w[0]))))
      fail(where(w[0]), "no PodDisruptionBudget covers it");
  }

  const controllerSvc = by("Service").find((s) => component(s) === "controller");
  for (const w of workloads) {
    const spec = podSpecOf(w);
    if (!spec) {
      fail(where(w), "no pod template");
      continue;
    }
    if (!matches(w.spec.selector.matchLabels, podLabelsOf(w))) fail(where(w), "selector does not match its pod labels");
    const sa = spec.serviceAccountName;
    if (sa && sa !== "default" && !find("ServiceAccount", sa)) fail(where(w), `ServiceAccount ${sa} missing`);
    const volumes = new Map((spec.volumes || []).map((v) => [v.name, v]));
    for (const v of volumes.values()) {
      if (v.configMap && !find("ConfigMap", v.configMap.name)) fail(where(w), `ConfigMap ${v.configMap.name} missing`);
    }
    for (const c of [...(spec.initContainers || []), ...spec.containers]) {
      if (!c.image) fail(where(w), `container ${c.name} has no image`);
      for (const m of c.volumeMounts || []) {
        if (!volumes.has(m.name)) fail(where(w), `container ${c.name} mounts missing volume ${m.name}`);
      }
      const ports = new Map((c.ports || []).map((p) => [p.name, p.containerPort]));
      for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
        if (!c[probe]) continue;
        if (!c[probe].grpc) fail(where(w), `${c.name}.${probe} is not a gRPC health probe`);
        else if (c[probe].grpc.port !== ports.get("grpc")) fail(where(w), `${c.name}.${probe} is not on the grpc port`);
      }
      if (spec.containers.includes(c)) {
        if (!c.readinessProbe || !c.livenessProbe) fail(where(w), `${c.name} lacks readiness or liveness probe`);
        if (!ports.has("grpc") || !ports.has("metrics")) fail(where(w), `${c.name} lacks grpc/metrics ports`);
        const res = c.resources || {};
        for (const [k, v] of Object.entries(res.limits || {})) {
          if (k.includes("/") && res.requests && res.requests[k] !== undefined && String(res.requests[k]) !== String(v))
            fail(where(w), `${c.name}: extended resource ${k} request != limit`);
        }
        const args = c.args || [];
        const at = args.indexOf("--controller");
        if (component(w) !== "controller") {
          if (at < 0) fail(where(w), `${c.name} has no --controller`);
          else if (controllerSvc) {
            const host = String(args[at + 1]).split(":")[0].split(".")[0];
            if (host !== controllerSvc.metadata.name) fail(where(w), `--controller ${args[at + 1]} is not Service ${controllerSvc.metadata.name}`);
          }
          if (!args.includes("--model")) fail(where(w), `${c.name} has no --model`);
        }
        if (w.kind === "StatefulSet") {
          const script = (c.command || []).join("\n");
          if (!/--rank "\$rank"/.test(script) || !/\$\{name##\*-\}/.test(script))
            fail(where(w), `${c.name}: command does not derive --rank from the pod ordinal`);
          // Ranks bind an address of the pod (--host) and register a routable
          // HOST:PORT with the controller (--advertise-address) on the grpc port.
          const grpcPort = ports.get("grpc");
          if (!new RegExp(`--advertise-address "[^"]*:${grpcPort}"`).test(script))
            fail(where(w), `${c.name}: command does not pass --advertise-address HOST:${grpcPort}`);
          if (/--host/.test(script)) fail(where(w), `${c.name}: command binds the advertised host (--host)`);
          if (!args.includes("--host")) fail(where(w), `${c.name}: no --host (bind address) in args`);
        }
      }
    }
  }
  for (const s of by("Service")) {
    const selected = workloads.filter((w) => matches(s.spec.selector, podLabelsOf(w)));
    if (selected.length === 0) fail(`${name}: Service/${s.metadata.name}`, "selects no pods");
    for (const p of s.spec.ports || []) {
      if (typeof p.targetPort !== "string") continue;
      for (const w of selected) {
        if (!podSpecOf(w).containers.some((c) => (c.ports || []).some((cp) => cp.name === p.targetPort)))
          fail(`${name}: Service/${s.metadata.name}`, `targetPort ${p.targetPort} not a port of ${w.metadata.name}`);
      }
    }
  }
  for (const p of by("PodDisruptionBudget")) {
    if (!workloads.some((w) => matches(p.spec.selector.matchLabels, podLabelsOf(w))))
      fail(`${name}: PodDisruptionBudget/${p.metadata.name}`, "selects no pods");
  }
  for (const rb of by("RoleBinding")) {
    if (rb.roleRef.kind === "Role" && !find("Role", rb.roleRef.name)) fail(`${name}: RoleBinding/${rb.metadata.name}`, `Role ${rb.roleRef.name} missing`);
    for (const s of rb.subjects || []) {
      if (s.kind === "ServiceAccount" && !find("ServiceAccount", s.name)) fail(`${name}: RoleBinding/${rb.metadata.name}`, `ServiceAccount ${s.name} missing`);
    }
  }
  for (const sm of by("ServiceMonitor")) {
    const sel = sm.spec.selector.matchLabels;
    const ports = sm.spec.endpoints.map((e) => e.port);
    const svcs = by("Service").filter((s) => matches(sel, s.metadata.labels || {}));
    if (svcs.length === 0) fail(`${name}: ServiceMonitor/${sm.metadata.name}`, "selects no Service");
    for (const s of svcs) {
      for (const port of ports) {
        if (!(s.spec.ports || []).some((p) => p.name === port)) fail(`${name}: ServiceMonitor/${sm.metadata.name}`, `Service ${s.metadata.name} has no port ${port}`);
      }
    }
  }
}

// ---------------------------------------------------------------------------
const BINARY_SOURCES = {
  "xpd-router": ["services/router/router_main.cc"],
  "xpd-prefill": ["services/prefill/prefill_main.cc", "common/runtime/model_session.h"],
  "xpd-decode": ["services/decode/decode_main.cc", "common/runtime/model_session.h"],
  "xpd-controller": ["services/controller/controller_main.cc"],
  xpd: ["services/cli"],
};
const sourceCache = new Map();
function sourcesOf(repo, binary) {
  if (!sourceCache.has(binary)) {
    let text = "";
    for (const rel of BINARY_SOURCES[binary]) {
      const p = path.join(repo, rel);
      const files = fs.statSync(p).isDirectory() ? fs.readdirSync(p).filter((f) => /\.(cc|h)$/.test(f)).map((f) => path.join(p, f)) : [p];
      for (const f of files) text += fs.readFileSync(f, "utf8");
    }
    sourceCache.set(binary, text);
  }
  return sourceCache.get(binary);
}
function flagCheck(name, objects, repo) {
  for (const o of objects) {
    const spec = o.kind === "Pod" ? o.spec : podSpecOf(o);
    if (!spec) continue;
    for (const c of [...(spec.initContainers || []), ...spec.containers]) {
      const cmd = c.command || [];
      let binary = cmd[0];
      let script = "";
      if (cmd[0] === "/bin/sh") {
        script = cmd[2] || "";
        binary = cmd[3] || (/\bexec (xpd[a-z-]*)\b/.exec(script) || [])[1];
      }
      const where = `${name}: ${o.kind}/${o.metadata.name} container ${c.name}`;
      if (!BINARY_SOURCES[binary]) {
        fail(where, `runs ${JSON.stringify(binary)}, not an xpd binary`);
        continue;
      }
      const text = sourcesOf(repo, binary);
      const words = [...(c.args || []), ...script.split(/[\s"']+/)];
      for (const w of words) {
        if (!/^--[a-z][a-z0-9-]*$/.test(w)) continue;
        if (!text.includes(`"${w.slice(2)}"`)) fail(where, `${binary} does not take ${w}`);
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Normalisation for --compare: what legitimately differs between the chart's
// render and the plain manifests.
const HELM_LABELS = ["helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/version", "app.kubernetes.io/part-of"];
function normalise(obj) {
  const o = JSON.parse(JSON.stringify(obj));
  const strip = (meta) => {
    if (!meta) return;
    delete meta.namespace;
    for (const l of HELM_LABELS) if (meta.labels) delete meta.labels[l];
    if (meta.annotations) {
      delete meta.annotations["helm.sh/resource-policy"];
      if (Object.keys(meta.annotations).length === 0) delete meta.annotations;
    }
  };
  strip(o.metadata);
  if (o.spec && o.spec.template) strip(o.spec.template.metadata);
  for (const s of o.subjects || []) delete s.namespace;
  const text = JSON.stringify(o).replace(/"([a-z0-9-]+)\.[a-z0-9-]+\.svc\.cluster\.local:(\d+)"/g, '"$1:$2"');
  return JSON.parse(text);
}
function diff(a, b, at, out) {
  if (out.length > 10) return;
  if (typeof a !== typeof b || Array.isArray(a) !== Array.isArray(b) || (a === null) !== (b === null)) {
    out.push(`${at}: ${JSON.stringify(a)} vs ${JSON.stringify(b)}`);
    return;
  }
  if (a && typeof a === "object") {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) diff(a[k], b[k], `${at}/${k}`, out);
  } else if (a !== b) {
    out.push(`${at}: ${JSON.stringify(a)} vs ${JSON.stringify(b)}`);
  }
}
function compare(fileA, fileB) {
  const key = (o) => `${o.kind}/${o.metadata.name}`;
  const a = new Map(loadDocs(fileA).map((o) => [key(o), normalise(o)]));
  const b = new Map(loadDocs(fileB).map((o) => [key(o), normalise(o)]));
  for (const k of a.keys()) if (!b.has(k)) fail(`compare`, `${k} only in ${path.basename(fileA)}`);
  for (const k of b.keys()) if (!a.has(k)) fail(`compare`, `${k} only in ${path.basename(fileB)}`);
  for (const [k, v] of a) {
    if (!b.has(k)) continue;
    const out = [];
    diff(v, b.get(k), k, out);
    for (const d of out) fail("compare", d);
  }
}

// ---------------------------------------------------------------------------
function main(argv) {
  let tsOut = null;
  let repo = null;
  const inputs = [];
  const comparisons = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--ts-out") tsOut = argv[++i];
    else if (argv[i] === "--repo") repo = argv[++i];
    else if (argv[i] === "--compare") comparisons.push([argv[++i], argv[++i]]);
    else {
      const eq = argv[i].indexOf("=");
      if (eq < 0) throw new Error(`expected NAME=FILE, got ${argv[i]}`);
      inputs.push([argv[i].slice(0, eq), argv[i].slice(eq + 1)]);
    }
  }
  const tsLines = [];
  const tsImports = {};
  let count = 0;
  for (const [name, file] of inputs) {
    const objects = loadDocs(file);
    if (objects.length === 0) fail(name, "no objects");
    objects.forEach((o, i) => schemaCheck(`${name}#${i} ${o.kind}/${o.metadata && o.metadata.name}`, o, tsLines, tsImports));
    topologyCheck(name, objects);
    if (repo) flagCheck(name, objects, repo);
    count += objects.length;
  }
  for (const [a, b] of comparisons) compare(a, b);
  if (tsOut) {
    const imports = Object.values(tsImports).map((x) => `import type { I${x.kind} as ${x.alias} } from "${x.mod}";`);
    fs.writeFileSync(tsOut, [...imports, "", ...tsLines, ""].join("\n"));
  }
  for (const f of failures) console.error(`FAIL ${f}`);
  console.log(`validate_k8s: ${count} objects in ${inputs.length} file(s), ${comparisons.length} comparison(s), ${failures.length} problem(s)`);
  process.exit(failures.length ? 1 : 0);
}

main(process.argv.slice(2));
