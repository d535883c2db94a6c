// Traces: captured requests and answers, newest first, filtered by model and tag and paged with
// the API's cursor. The filter lives in the address (#/traces?model=…&tag=…), so a filtered list
// can be shared and the back button undoes a filter. A row opens its trace.

import { api } from "../api.js";
import { emptyCard, fill, h, millis, table, when } from "../dom.js";
import { pager } from "../pager.js";

const PAGE_SIZE = 25;

/** The trace list's address for these filters. */
export function tracesHash({ model = "", tag = "" } = {}) {
  const query = new URLSearchParams();
  if (model) query.set("model", model);
  if (tag) query.set("tag", tag);
  const text = String(query);
  return `#/traces${text ? `?${text}` : ""}`;
}

export function mount(root, [query]) {
  const filters = new URLSearchParams(query || "");
  const model = filters.get("model") || "";
  const tag = filters.get("tag") || "";
  const list = h("div", { id: "traces" });
  const pages = pager({ back: "Newer", forward: "Older", onChange: () => page.refresh() });
  const modelNames = h("datalist", { id: "model-names" });
  const modelInput = h("input", { id: "filter-model", name: "model", value: model, list: "model-names",
    placeholder: "any model", autocomplete: "off" });
  const tagInput = h("input", { id: "filter-tag", name: "tag", value: tag, placeholder: "any tag, e.g. billing",
    autocomplete: "off" });
  const form = h("form", { class: "card form-grid filters", id: "trace-filters" },
    h("div", {}, h("label", { for: "filter-model" }, "Model"), modelInput, modelNames),
    h("div", {}, h("label", { for: "filter-tag" }, "Tag"), tagInput),
    h("div", { class: "actions buttons" }, h("button", { type: "submit" }, "Filter"),
      model || tag ? h("a", { class: "button plain", href: "#/traces", id: "clear-filters" }, "Clear") : null));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = tracesHash({ model: modelInput.value.trim(), tag: tagInput.value.trim() });
  });
  let namesFilled = false;

  fill(root, h("div", { class: "page-head" }, h("h1", {}, "Traces"),
    h("p", { class: "muted" }, "Captured requests and answers, newest first. Open one to give feedback.")),
  form, list);

  const page = {
    async refresh() {
      const params = new URLSearchParams({ limit: PAGE_SIZE });
      if (model) params.set("model", model);
      if (tag) params.set("tag", tag);
      if (pages.after) params.set("after", pages.after);
      const [traces, models] = await Promise.all([api(`/api/v1/traces?${params}`),
        namesFilled ? null : api("/api/v1/models")]);
      if (models) {
        fill(modelNames, models.data.map((m) => h("option", { value: m.name })));
        namesFilled = true;
      }
      pages.update(traces.has_more, traces.data.at(-1)?.id);
      if (!traces.data.length && pages.index === 0) {
        fill(list, model || tag ? noMatch(model, tag) : captureHelp(models?.data[0]?.name || modelNames.firstChild?.value));
        return;
      }
      fill(list, h("section", { class: "card" },
        table(["Time", "Model", "Environment", "Status", "Latency", "Tokens in → out", "Feedback", "Tags"],
          traces.data.map(row), { empty: "No older traces." }), pages.node));
    },
  };
  return page;
}

function row(trace) {
  return [
    h("a", { href: `#/traces/${encodeURIComponent(trace.id)}`, class: "trace-link", "data-trace": trace.id }, when(trace.created_at)),
    trace.model,
    trace.environment || h("span", { class: "muted" }, "—"),
    h("span", { class: trace.status_code >= 400 ? "pill pill-failed" : "pill pill-ok" }, trace.status_code),
    millis(trace.latency_ms),
    `${trace.prompt_tokens ?? "—"} → ${trace.completion_tokens ?? "—"}`,
    feedbackCell(trace),
    h("span", { class: "tags" }, trace.tags.map((t) => h("span", { class: "tag" }, t))),
  ];
}

/** The feedback a trace was given, in a few characters: score, label, whether it was corrected. */
export function feedbackCell(trace) {
  if (trace.feedback_at === null || trace.feedback_at === undefined) return h("span", { class: "muted" }, "—");
  const score = trace.feedback_score;
  return h("span", { class: "feedback" },
    score !== null && score !== undefined
      ? h("span", { class: `score ${score >= 0.5 ? "good" : "bad"}`, title: "feedback score, 0 to 1" }, score.toFixed(2)) : null,
    trace.feedback_label ? h("span", { class: "tag label" }, trace.feedback_label) : null,
    trace.corrected_output !== null && trace.corrected_output !== undefined
      ? h("span", { class: "muted", title: "a corrected output was given" }, "corrected") : null);
}

function noMatch(model, tag) {
  const what = [model && `model “${model}”`, tag && `tag “${tag}”`].filter(Boolean).join(" and ");
  return h("div", { class: "card empty" }, h("p", {}, `No traces of ${what}. `, h("a", { href: "#/traces" }, "Show all traces"), "."));
}

function captureHelp(model = "MODEL") {
  const name = model || "MODEL";
  return emptyCard("No traces yet",
    "Capture is off by default: slipway stores requests and answers only for the deployments or environments you turn it on for. Then every call through the gateway is kept here, ready for feedback and for datasets.",
    "Either set it in the package's slipway.yaml and deploy again:",
    { command: `capture: true\n\nslipway deploy ${name === "MODEL" ? "my-model" : name} --promote` },
    "or switch it on for an environment, without a new deployment:",
    { command: `curl -X PATCH ${location.origin}/api/v1/models/${name}/environments/production \\\n` +
      '  -H "Authorization: Bearer $(cat ~/.slipway/admin.key)" \\\n' +
      `  -H "Content-Type: application/json" -d '{"capture": true}'` },
    "Tag requests to find them here: a request's OpenAI metadata {\"team\": \"billing\"} becomes the tag team=billing, and the header X-Slipway-Tags: beta,canary adds beta and canary.");
}
