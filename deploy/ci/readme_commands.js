// Checks that the commands README.md gives for deploying and monitoring are
// the command lines CI runs (tests/deploy/check_deploy.sh).
//
//   node readme_commands.js --repo DIR --helm HELM --kubectl KUBECTL \
//        --section "Deploy on Kubernetes" --section Monitoring --ci FILE...
//
// Every command of the sections' ```sh blocks (continuation lines joined,
// comments dropped) must be one of:
//   * a command line that appears verbatim (whitespace aside) in one of the
//     --ci scripts, which run it;
//   * `helm install|upgrade ...`: run here as `helm template` with the same
//     chart, values and flags (no cluster needed to render);
//   * `kubectl apply -k DIR`: run here as `kubectl kustomize DIR`;
//   * a command that needs a Kubernetes cluster or a Docker engine (`helm
//     test|status|uninstall`, other `kubectl`, `docker`): listed, not run; its
//     file arguments must exist (the Dockerfile and manifests themselves are
//     validated by the other checks).
// Prints one line per command; exits 1 if any command is none of these.
"use strict";
const fs = require("fs");
const path = require("path");
const { execFileSync } = require("child_process");

function args(argv) {
  const out = { sections: [], ci: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--repo") out.repo = argv[++i];
    else if (a === "--helm") out.helm = argv[++i];
    else if (a === "--kubectl") out.kubectl = argv[++i];
    else if (a === "--section") out.sections.push(argv[++i]);
    else if (a === "--ci") {
      while (i + 1 < argv.length && !argv[i + 1].startsWith("--")) out.ci.push(argv[++i]);
    } else throw new Error(`unknown argument ${a}`);
  }
  return out;
}

// The ```sh blocks of the level-2 section titled `title`.
function sectionBlocks(readme, title) {
  const lines = readme.split("\n");
  const start = lines.findIndex((l) => l.trim() === `## ${title}`);
  if (start < 0) return null;
  const blocks = [];
  let block = null;
  for (let i = start + 1; i < lines.length; i++) {
    const line = lines[i];
    if (block === null && /^## /.test(line)) break;
    if (block === null && /^```(sh|bash|shell)\s*$/.test(line.trim())) block = [];
    else if (block !== null && line.trim() === "```") {
      blocks.push(block);
      block = null;
    } else if (block !== null) block.push(line);
  }
  return blocks;
}

// Commands of a block: continuation lines joined, comments and blank lines dropped.
function commands(block) {
  const out = [];
  let current = "";
  for (const raw of block) {
    const line = raw.replace(/\s+#\s.*$/, "");
    if (!current && /^\s*(#|$)/.test(line)) continue;
    if (/\\\s*$/.test(line)) {
      current += line.replace(/\\\s*$/, " ");
      continue;
    }
    current += line;
    out.push(current.replace(/\s+/g, " ").trim().replace(/\s*&$/, ""));
    current = "";
  }
  if (current.trim()) out.push(current.replace(/\s+/g, " ").trim());
  return out;
}

// Minimal POSIX word splitting: quotes and backslashes, no expansions.
function words(command) {
  const out = [];
  let word = null;
  for (let i = 0; i < command.length; i++) {
    const c = command[i];
    if (c === " ") {
      if (word !== null) out.push(word);
      word = null;
    } else if (c === "'") {
      const end = command.indexOf("'", i + 1);
      word = (word || "") + command.slice(i + 1, end);
      i = end;
    } else if (c === '"') {
      let j = i + 1;
      let s = "";
      while (j < command.length && command[j] !== '"') {
        if (command[j] === "\\" && j + 1 < command.length) j++;
        s += command[j++];
      }
      word = (word || "") + s;
      i = j;
    } else if (c === "\\" && i + 1 < command.length) {
      word = (word || "") + command[++i];
    } else {
      word = (word || "") + c;
    }
  }
  if (word !== null) out.push(word);
  return out;
}

function main() {
  const opts = args(process.argv.slice(2));
  const readme = fs.readFileSync(path.join(opts.repo, "README.md"), "utf8");
  const ciTexts = opts.ci.map((f) => ({
    name: path.relative(opts.repo, f),
    text: fs.readFileSync(f, "utf8").split("\n").map((l) => l.replace(/\s+/g, " ")).join("\n"),
  }));
  let failures = 0;
  let total = 0;
  const fail = (m) => {
    console.log(`FAIL ${m}`);
    failures++;
  };
  for (const title of opts.sections) {
    const blocks = sectionBlocks(readme, title);
    if (blocks === null) {
      fail(`README.md has no section "## ${title}"`);
      continue;
    }
    for (const command of blocks.flatMap(commands)) {
      total++;
      const w = words(command);
      const ci = ciTexts.find((f) => f.text.includes(command));
      if (ci) {
        console.log(`ok   [${title}] run by ${ci.name}: ${command}`);
      } else if (w[0] === "helm" && (w[1] === "install" || w[1] === "upgrade")) {
        // helm upgrade --install NAME CHART ... / helm install NAME CHART ...
        const rest = w.slice(2).filter((x) => x !== "--install");
        try {
          const out = execFileSync(opts.helm, ["template", ...rest], { cwd: opts.repo, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
          const kinds = (out.match(/^kind: /gm) || []).length;
          if (kinds === 0) fail(`[${title}] helm template rendered nothing for: ${command}`);
          else console.log(`ok   [${title}] rendered as helm template (${kinds} objects): ${command}`);
        } catch (e) {
          fail(`[${title}] helm template fails for: ${command}\n${e.stderr || e.message}`);
        }
      } else if (w[0] === "kubectl" && w[1] === "apply" && w[2] === "-k") {
        try {
          execFileSync(opts.kubectl, ["kustomize", w[3]], { cwd: opts.repo, stdio: ["ignore", "pipe", "pipe"] });
          console.log(`ok   [${title}] rendered as kubectl kustomize ${w[3]}: ${command}`);
        } catch (e) {
          fail(`[${title}] kubectl kustomize ${w[3]} fails for: ${command}\n${e.stderr || e.message}`);
        }
      } else if (w[0] === "docker" || w[0] === "kubectl" || (w[0] === "helm" && ["test", "status", "uninstall"].includes(w[1]))) {
        // Needs a cluster or an engine: its files must exist.
        const files = [];
        for (let i = 0; i < w.length; i++) {
          if (["-f", "--filename", "--from-file", "--values"].includes(w[i]) && w[i + 1]) files.push(w[i + 1]);
          const eq = /^--(?:from-file|values|filename)=(.+)$/.exec(w[i]);
          if (eq) files.push(eq[1].replace(/^[^=]*=/, ""));
        }
        const missing = files.filter((f) => !f.startsWith("-") && f !== "-" && !fs.existsSync(path.join(opts.repo, f)));
        if (missing.length) fail(`[${title}] ${command}: no such file ${missing.join(", ")}`);
        else console.log(`ok   [${title}] needs ${w[0] === "docker" ? "a Docker engine" : "a Kubernetes cluster"} (not run): ${command}`);
      } else {
        fail(`[${title}] not run by CI (${opts.ci.map((f) => path.relative(opts.repo, f)).join(", ")}): ${command}`);
      }
    }
  }
  console.log(`readme_commands: ${total} commands, ${failures} problem(s)`);
  process.exit(failures || total === 0 ? 1 : 0);
}

main();
