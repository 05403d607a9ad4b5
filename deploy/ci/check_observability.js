#!/usr/bin/env node
// Checks the Grafana dashboard and the metric names of the alert rules.
// Used by tests/deploy/check_deploy.sh.
//
//   node check_observability.js --repo DIR --dashboard FILE.json --alerts FILE.yml \
//        --rules-out RULES.yml --ts-out DASHBOARD.ts
//
// Dashboard: valid JSON with a uid, title, schemaVersion and panels; unique
// panel ids; every panel on the 24-column grid without overlaps, with a
// Prometheus datasource and targets whose refIds are unique and whose
// expressions are non-empty; the panels cover throughput, TTFT/ITL, queues,
// KV usage, KV transfer, expert balance and placement epochs.
// --rules-out: every expression (panel targets and template variable queries)
// as a recording rule, Grafana variables substituted, for `promtool check
// rules`, which parses the PromQL. --ts-out: the dashboard typed as
// @grafana/schema's Dashboard, for `tsc --noEmit`.
// Metric names: every xpd_* name used by the dashboard or the alert rules is
// one the C++ services export (found in their sources), or one of the
// metrics that arrive with expert parallelism.
"use strict";

const fs = require("fs");
const path = require("path");
const YAML = require("yaml");

const FUTURE_METRICS = [];
const REQUIRED_METRICS = {
  throughput: "xpd_generation_tokens_total",
  "time to first token": "xpd_time_to_first_token_seconds",
  "inter-token latency": "xpd_inter_token_latency_seconds",
  queues: "xpd_requests_waiting",
  "KV cache usage": "xpd_kv_cache_blocks_used",
  "KV transfer": "xpd_kv_transfer_bytes_total",
  "expert load balance": "xpd_expert_balance_ratio",
  "all-to-all latency": "xpd_expert_exchange_seconds",
  rebalances: "xpd_rebalances_total",
  "placement epochs": "xpd_placement_epoch",
};

const failures = [];
const fail = (where, msg) => failures.push(`${where}: ${msg}`);

function args(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) out[argv[i].replace(/^--/, "")] = argv[i + 1];
  for (const k of ["repo", "dashboard", "alerts", "rules-out", "ts-out"]) {
    if (!out[k]) throw new Error(`missing --${k}`);
  }
  return out;
}

// Grafana variables -> values promtool can parse.
function substitute(expr) {
  return expr
    .replace(/\$__rate_interval|\$\{__rate_interval\}/g, "5m")
    .replace(/\$__interval|\$\{__interval\}/g, "1m")
    .replace(/\$__range|\$\{__range\}/g, "1h")
    .replace(/\$\{?[A-Za-z_][A-Za-z0-9_]*(?::[a-z]+)?\}?/g, ".*");
}

function checkDashboard(file, rules, exprs) {
  let dash;
  try {
    dash = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    fail(file, `not valid JSON: ${e.message}`);
    return null;
  }
  for (const k of ["uid", "title", "schemaVersion"]) if (!dash[k]) fail(file, `no ${k}`);
  if (!Array.isArray(dash.panels) || dash.panels.length === 0) {
    fail(file, "no panels");
    return dash;
  }
  const flat = [];
  for (const p of dash.panels) {
    flat.push(p);
    if (p.type === "row") for (const c of p.panels || []) flat.push(c);
  }
  const ids = new Set();
  const cells = new Map();
  for (const p of flat) {
    const where = `panel ${p.id} "${p.title}"`;
    if (typeof p.id !== "number") fail(where, "no numeric id");
    else if (ids.has(p.id)) fail(where, "duplicate id");
    ids.add(p.id);
    if (!p.type) fail(where, "no type");
    if (!p.title) fail(where, "no title");
    const g = p.gridPos;
    if (!g || ![g.h, g.w, g.x, g.y].every(Number.isInteger) || g.x < 0 || g.w < 1 || g.x + g.w > 24 || g.h < 1) {
      fail(where, `bad gridPos ${JSON.stringify(g)}`);
    } else if (!(p.type === "row" && p.collapsed)) {
      for (let y = g.y; y < g.y + g.h; y++) {
        for (let x = g.x; x < g.x + g.w; x++) {
          const k = `${x},${y}`;
          if (cells.has(k)) {
            fail(where, `overlaps panel ${cells.get(k)} at x=${x} y=${y}`);
            y = Infinity;
            break;
          }
          cells.set(k, p.id);
        }
      }
    }
    if (p.type === "row") continue;
    if (!p.datasource || p.datasource.type !== "prometheus") fail(where, "datasource is not Prometheus");
    if (!Array.isArray(p.targets) || p.targets.length === 0) {
      fail(where, "no targets");
      continue;
    }
    const refs = new Set();
    for (const t of p.targets) {
      if (!t.refId || refs.has(t.refId)) fail(where, `missing or duplicate refId ${t.refId}`);
      refs.add(t.refId);
      if (typeof t.expr !== "string" || !t.expr.trim()) {
        fail(where, `target ${t.refId} has no expr`);
        continue;
      }
      exprs.push(t.expr);
      rules.push({ record: `dashboard:panel_${p.id}_${t.refId}`, expr: substitute(t.expr) });
    }
  }
  for (const v of (dash.templating && dash.templating.list) || []) {
    if (v.type !== "query") continue;
    const q = typeof v.query === "string" ? v.query : v.query && v.query.query;
    const m = /^label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\)$/.exec((q || "").trim());
    if (!m) {
      fail(`variable ${v.name}`, `unsupported query ${JSON.stringify(q)}`);
      continue;
    }
    exprs.push(m[1]);
    rules.push({ record: `dashboard:variable_${v.name}`, expr: substitute(m[1]) });
  }
  const all = exprs.join("\n");
  for (const [what, metric] of Object.entries(REQUIRED_METRICS)) {
    if (!new RegExp(`\\b${metric}(_bucket|_count|_sum)?\\b`).test(all)) fail(file, `no panel shows ${what} (${metric})`);
  }
  return dash;
}

function alertExprs(file) {
  const doc = YAML.parse(fs.readFileSync(file, "utf8"));
  const out = [];
  for (const g of doc.groups || []) for (const r of g.rules || []) out.push(r.expr);
  return out;
}

function exportedMetrics(repo) {
  const names = new Set(FUTURE_METRICS);
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.(cc|h)$/.test(e.name) && !/_test\.cc$/.test(e.name)) {
        for (const m of fs.readFileSync(p, "utf8").matchAll(/"(xpd_[a-z0-9_]+)"/g)) names.add(m[1]);
      }
    }
  };
  for (const d of ["common", "services"]) if (fs.existsSync(path.join(repo, d))) walk(path.join(repo, d));
  return names;
}

function checkMetricNames(repo, sources) {
  const known = exportedMetrics(repo);
  for (const [where, exprs] of sources) {
    for (const expr of exprs) {
      for (const m of expr.matchAll(/\b(xpd_[a-z0-9_]+)/g)) {
        const base = m[1].replace(/_(bucket|count|sum)$/, "");
        if (!known.has(m[1]) && !known.has(base)) fail(where, `${m[1]} is not a metric xpd exports`);
      }
    }
  }
  return known.size;
}

function main() {
  const a = args(process.argv.slice(2));
  const rules = [];
  const exprs = [];
  const dash = checkDashboard(a.dashboard, rules, exprs);
  const known = checkMetricNames(a.repo, [
    [path.basename(a.dashboard), exprs],
    [path.basename(a.alerts), alertExprs(a.alerts)],
  ]);
  fs.writeFileSync(a["rules-out"], YAML.stringify({ groups: [{ name: "dashboard-expressions", rules }] }, { lineWidth: 0 }));
  if (dash) {
    fs.writeFileSync(
      a["ts-out"],
      [
        `import type { Dashboard } from "@grafana/schema";`,
        ``,
        `// JSON carries an enum's value, not the enum: accept the string values of`,
        `// string enums (ThresholdsMode and the like); everything else stays exact.`,
        `type Loose<T> = T extends string ? \`\${T}\` : T extends readonly (infer U)[] ? Loose<U>[] :`,
        `  T extends object ? { [K in keyof T]: Loose<T[K]> } : T;`,
        ``,
        `export const dashboard: Loose<Dashboard> = ${JSON.stringify(dash, null, 2)};`,
        ``,
      ].join("\n"),
    );
  }
  for (const f of failures) console.error(`FAIL ${f}`);
  console.log(`check_observability: ${rules.length} expressions, ${known} known metric names, ${failures.length} problem(s)`);
  process.exit(failures.length ? 1 : 0);
}

main();
