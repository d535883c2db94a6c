// Evals: the workspace's suites, and its runs newest first with target, status, mean score and its
// 95% confidence interval, and how many items passed. A suite's name shows only its runs
// (#/evals?suite=<id>); a run opens its per-item results.

import { api } from "../api.js";
import { emptyHelp, fill, h, number, pill, table, when } from "../dom.js";

const RUNS_SHOWN = 100; // the most the runs route lists (it has no cursor)
const UNFINISHED = new Set(["queued", "running"]);

export const score = (v) => (v === null || v === undefined ? "—" : Number(v).toFixed(3));
export const interval = (ci) => (Array.isArray(ci) ? `[${score(ci[0])}, ${score(ci[1])}]` : "");

/** A run's mean score with its 95% interval, its progress while it runs, or why it failed. */
export function scoreCell(run) {
  const s = run.summary || {};
  if (run.status === "succeeded" || (run.status === "failed" && s.mean_score !== undefined)) {
    return h("span", { class: "score-ci" }, h("strong", {}, score(s.mean_score)), " ",
      h("small", { class: "muted", title: "95% Student t-interval of the mean score" }, interval(s.mean_score_ci)));
  }
  if (UNFINISHED.has(run.status)) {
    return h("span", { class: "muted" }, s.num_items ? `${number(s.completed ?? 0)} of ${number(s.num_items)} done` : "waiting");
  }
  return h("span", { class: "muted" }, run.error?.message || "—");
}

export function passedCell(run) {
  const s = run.summary || {};
  if (s.num_passed === undefined) return h("span", { class: "muted" }, "—");
  return h("span", { title: `pass rate ${score(s.pass_rate)}, 95% Wilson interval ${interval(s.pass_rate_ci)}` },
    `${number(s.num_passed)}/${number(s.num_items ?? s.num_samples)}`);
}

export function targetCell(run) {
  return h("span", {}, h("code", {}, run.target), " ", h("small", { class: "muted" }, run.target_kind));
}

export function mount(root, [query]) {
  const suiteFilter = new URLSearchParams(query || "").get("suite") || "";
  const suites = h("div", { id: "suites" });
  const runs = h("div", { id: "runs" });
  const runsTitle = h("h2", {}, "Runs");
  fill(root, h("div", { class: "page-head" }, h("h1", {}, "Evals"),
    h("p", { class: "muted" }, "Suites of graded questions, and runs of them against models and deployments.")),
  h("section", { class: "card" }, h("h2", {}, "Suites"), suites),
  h("section", { class: "card" }, h("div", { class: "card-head" }, runsTitle,
    suiteFilter ? h("a", { href: "#/evals" }, "all runs") : null), runs));
  return {
    async refresh() {
      const runQuery = new URLSearchParams({ limit: RUNS_SHOWN });
      if (suiteFilter) runQuery.set("suite", suiteFilter);
      const [suiteList, runList] = await Promise.all([api("/api/v1/evals/suites"), api(`/api/v1/evals/runs?${runQuery}`)]);
      const names = new Map(suiteList.data.map((s) => [s.id, s.name]));
      if (suiteFilter) fill(runsTitle, `Runs of ${names.get(suiteFilter) || suiteFilter}`);
      if (!suiteList.data.length) {
        fill(suites, emptyState());
      } else {
        fill(suites, table(["Name", "Items", "Graders", "Description", "Created"], suiteList.data.map((s) => [
          h("a", { href: `#/evals?suite=${encodeURIComponent(s.id)}`, "data-suite": s.id }, s.name),
          number(s.num_items), s.graders.map((g) => g.name || g.type).join(", "),
          h("span", { class: "message" }, s.description || "—"), when(s.created_at),
        ])));
      }
      fill(runs, table(["Run", "Suite", "Target", "Status", "Mean score (95% CI)", "Passed", "Created", "Finished"],
        runList.data.map((r) => [
          h("a", { href: `#/evals/runs/${encodeURIComponent(r.id)}`, class: "run-link", "data-run": r.id }, h("code", {}, r.id)),
          names.get(r.suite_id) || h("code", {}, r.suite_id), targetCell(r), pill(r.status), scoreCell(r), passedCell(r),
          when(r.created_at), when(r.finished_at),
        ]), { empty: suiteList.data.length ? "No runs yet. Run a suite against a model:" : "No runs yet." }));
      if (!runList.data.length && suiteList.data.length) {
        runs.append(h("pre", {}, h("code", {}, `slipway evals run ${suiteList.data[0].name} --target MODEL`)));
      }
    },
  };
}

function emptyState() {
  return emptyHelp(
    "No eval suites yet. A suite is JSONL, one item per line ({\"input\": \"…\", \"ideal\": \"…\"} or {\"messages\": […], \"ideal\": …}), with one or more graders (exact, includes, regex, json_schema, python, llm_judge):",
    { command: "slipway evals suites create qa.jsonl --name qa --grader exact\nslipway evals run qa --target MODEL" });
}
