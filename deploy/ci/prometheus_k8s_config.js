#!/usr/bin/env node
// Debian's promtool is built without Kubernetes service discovery, so it
// rejects kubernetes_sd_configs. This checks those blocks itself (roles,
// namespaces, known keys) and writes a copy of the config with each replaced
// by a static target, so `promtool check config` still checks everything else
// (globals, rule files, relabel rules and their regexes).
//   node prometheus_k8s_config.js IN.yml OUT.yml
"use strict";
const fs = require("fs");
const path = require("path");
const YAML = require("yaml");

const ROLES = ["pod", "service", "endpoints", "endpointslice", "node", "ingress"];
const KEYS = ["role", "namespaces", "selectors", "api_server", "kubeconfig_file", "attach_metadata",
  "basic_auth", "authorization", "oauth2", "tls_config", "proxy_url", "follow_redirects", "enable_http2"];
const [input, output] = process.argv.slice(2);
const config = YAML.parse(fs.readFileSync(input, "utf8"));
const problems = [];
let blocks = 0;
for (const job of config.scrape_configs || []) {
  const sds = job.kubernetes_sd_configs;
  if (!sds) continue;
  if (!Array.isArray(sds) || sds.length === 0) problems.push(`${job.job_name}: kubernetes_sd_configs must be a non-empty list`);
  for (const sd of sds || []) {
    blocks++;
    for (const k of Object.keys(sd)) if (!KEYS.includes(k)) problems.push(`${job.job_name}: unknown kubernetes_sd_configs key ${k}`);
    if (!ROLES.includes(sd.role)) problems.push(`${job.job_name}: role ${sd.role} is not one of ${ROLES.join(", ")}`);
    if (sd.namespaces !== undefined) {
      const ns = sd.namespaces;
      const names = ns && ns.names;
      if (!names || !Array.isArray(names) || !names.every((n) => typeof n === "string" && /^[a-z0-9-]+$/.test(n)))
        problems.push(`${job.job_name}: namespaces.names must be a list of namespace names`);
      for (const k of Object.keys(ns || {})) if (!["names", "own_namespace"].includes(k)) problems.push(`${job.job_name}: unknown namespaces key ${k}`);
    }
    // Relabelling on pod metadata needs the pod role.
    const usesPodMeta = (job.relabel_configs || []).some((r) => (r.source_labels || []).some((l) => l.startsWith("__meta_kubernetes_pod_")));
    if (usesPodMeta && !["pod", "endpoints", "endpointslice"].includes(sd.role)) problems.push(`${job.job_name}: relabels on pod metadata with role ${sd.role}`);
  }
  delete job.kubernetes_sd_configs;
  job.static_configs = [{ targets: ["127.0.0.1:9464"] }];
}
if (blocks === 0) problems.push("no kubernetes_sd_configs found");
// Rule files resolve relative to the config file: make them absolute.
config.rule_files = (config.rule_files || []).map((f) => path.resolve(path.dirname(input), f));
fs.writeFileSync(output, YAML.stringify(config));
for (const p of problems) console.error(`FAIL ${p}`);
console.log(`prometheus_k8s_config: ${blocks} kubernetes_sd_configs block(s), ${problems.length} problem(s)`);
process.exit(problems.length ? 1 : 0);
