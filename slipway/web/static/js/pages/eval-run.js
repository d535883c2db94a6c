// One eval run: its target, status and summary (mean score and pass rate with their 95% intervals,
// overall and per grader), then each item's result: pass or fail, score, the conversation asked,
// the answer beside the ideal one, and every grader's verdict with its rationale (an LLM judge's
// reasoning included). Results page by item index; "only failed" narrows them.

import { api } from "../api.js";
import { conversation } from "../chat.js";
import { errorBox, fact, fill, h, number, pill, table, when } from "../dom.js";
import { pager } from "../pager.js";
import { interval, passedCell, score, scoreCell, targetCell } from "./evals.js";

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const RESULTS_PAGE = 50;

export function mount(root, [rawId]) {
  const runId = decodeURIComponent(rawId);
  const base = `/api/v1/evals/runs/${encodeURIComponent(runId)}`;
  const status = h("span", {});
  const summary = h("div", {});
  const graders = h("div", { id: "grader-summary" });
  const results = h("div", { id: "results" });
  const onlyFailed = h("input", { type: "checkbox", id: "only-failed" });
  const pages = pager({ back: "Previous", forward: "Next", id: "results-pager", onChange: () => rereadResults() });
  let suite = null;
  let settled = false;

  onlyFailed.addEventListener("change", () => {
    pages.reset();
    rereadResults().catch((error) => fill(results, errorBox(error)));
  });
  fill(root,
    h("div", { class: "page-head" }, h("h1", {}, "Eval run"), status, h("code", { class: "muted" }, runId),
      h("a", { href: "#/evals" }, "← all runs")),
    h("section", { class: "card" }, summary),
    h("section", { class: "card" }, h("h2", {}, "By grader"), graders),
    h("section", { class: "card" },
      h("div", { class: "card-head" }, h("h2", {}, "Results"),
        h("label", { class: "check", for: "only-failed" }, onlyFailed, "only failed")),
      results, pages.node));

  async function readResults() {
    const params = new URLSearchParams({ limit: RESULTS_PAGE, failed_only: onlyFailed.checked });
    if (pages.after !== null) params.set("after", pages.after);
    const listing = await api(`${base}/results?${params}`);
    pages.update(listing.has_more, listing.data.at(-1)?.item_index);
    const judges = new Set((suite?.graders || []).filter((g) => g.type === "llm_judge").map((g) => g.name || g.type));
    fill(results, listing.data.length ? listing.data.map((r) => resultView(r, judges))
      : h("p", { class: "muted" }, onlyFailed.checked ? "No failed items." : "No results yet: they appear as items are graded."));
  }

  function rereadResults() {
    settled = false; // read the page asked for, even of a finished run
    return page.refresh();
  }

  const page = {
    async refresh() {
      if (settled) return;
      const run = await api(base);
      if (!suite) suite = await api(`/api/v1/evals/suites/${encodeURIComponent(run.suite_id)}`);
      fill(status, pill(run.status));
      const s = run.summary || {};
      fill(summary, h("dl", { class: "facts" },
        fact("Suite", h("a", { href: `#/evals?suite=${encodeURIComponent(suite.id)}` }, suite.name)),
        fact("Target", targetCell(run)),
        fact("Status", h("span", { id: "run-status" }, pill(run.status))),
        fact("Mean score (95% CI)", h("span", { id: "run-score" }, scoreCell(run))),
        fact("Pass rate (95% CI)", s.pass_rate === undefined ? null
          : h("span", {}, h("strong", {}, score(s.pass_rate)), " ", h("small", { class: "muted" }, interval(s.pass_rate_ci)))),
        fact("Passed", h("span", { id: "run-passed" }, passedCell(run))),
        fact("Errors", s.num_errors === undefined ? null : number(s.num_errors)),
        fact("Created", when(run.created_at)),
        fact("Finished", when(run.finished_at)),
        run.error ? fact("Error", h("span", { class: "error" }, run.error.message), { class: "wide" }) : null,
        s.intervals ? fact("Intervals", h("small", { class: "muted" }, s.intervals), { class: "wide" }) : null));
      const perGrader = Object.entries(s.graders || {});
      fill(graders, table(["Grader", "Mean score", "95% CI", "Pass rate", "95% CI", "Passed"], perGrader.map(([name, g]) => [
        name, score(g.mean_score), interval(g.mean_score_ci), score(g.pass_rate), interval(g.pass_rate_ci),
        `${number(g.num_passed)}/${number(g.num_samples)}`,
      ]), { empty: FINISHED.has(run.status) ? "No per-grader summary." : "Summaries come when the run finishes." }));
      await readResults();
      settled = FINISHED.has(run.status);
    },
  };
  return page;
}

function text(value) {
  if (value === null || value === undefined) return h("span", { class: "muted" }, "—");
  return h("div", { class: "text" }, typeof value === "string" ? value : JSON.stringify(value, null, 2));
}

function resultView(result, judges) {
  const sample = result.sample || {};
  const grades = sample.grades || [];
  return h("article", { class: `result ${result.passed ? "passed" : "failed"}`, "data-item": result.item_index },
    h("header", {}, h("strong", {}, `#${result.item_index + 1}`),
      h("span", { class: `pill ${result.passed ? "pill-pass" : "pill-fail"}` }, result.passed ? "pass" : "fail"),
      h("span", { class: "muted" }, `score ${score(result.score)}`)),
    h("div", { class: "result-body" },
      h("div", {}, h("h4", {}, "Asked"), Array.isArray(sample.messages) ? conversation(sample.messages) : text(sample.input)),
      h("div", {}, h("h4", {}, "Answer"), sample.error ? h("p", { class: "error" }, sample.error) : text(sample.output),
        h("h4", {}, "Ideal"), text(sample.ideal)),
      h("div", {}, h("h4", {}, "Graders"), grades.length
        ? h("ul", { class: "grades" }, grades.map((g) => h("li", { class: judges.has(g.grader) ? "judge" : "" },
          h("div", {}, h("strong", {}, g.grader), " ", h("span", { class: `pill ${g.passed ? "pill-pass" : "pill-fail"}` },
            g.passed ? "pass" : "fail"), " ", h("span", { class: "muted" }, score(g.score)),
          judges.has(g.grader) ? h("small", { class: "muted" }, " judge's rationale") : null),
          g.rationale ? h("p", { class: "rationale" }, g.rationale) : null)))
        : h("p", { class: "rationale" }, result.rationale || "—"))));
}
