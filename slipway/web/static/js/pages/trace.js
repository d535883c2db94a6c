// One trace: when, which model and environment, how long, its tags; the request and the answer as
// a conversation (raw JSON folded beneath); and feedback: a score, a label and a corrected output,
// POSTed to /api/v1/traces/{id}/feedback, the saved values shown back from the server's answer.

import { api } from "../api.js";
import { answerText, rawJson, requestView, responseView } from "../chat.js";
import { errorBox, fact, fill, h, millis, when } from "../dom.js";
import { tracesHash } from "./traces.js";

export function mount(root, [rawId]) {
  const traceId = decodeURIComponent(rawId);
  const base = `/api/v1/traces/${encodeURIComponent(traceId)}`;
  const summary = h("div", {});
  const request = h("div", {});
  const response = h("div", {});
  const saved = h("div", { id: "feedback-saved" });
  const feedback = feedbackForm(base, (trace) => showSaved(trace));
  let shown = null; // the trace last drawn, to redraw only what changed

  fill(root,
    h("div", { class: "page-head" }, h("h1", {}, "Trace"), h("code", { class: "muted" }, traceId),
      h("a", { href: "#/traces" }, "← all traces")),
    h("section", { class: "card" }, summary),
    h("div", { class: "two-col even" },
      h("section", { class: "card", id: "trace-request" }, h("h2", {}, "Request"), request),
      h("section", { class: "card", id: "trace-response" }, h("h2", {}, "Response"), response)),
    h("section", { class: "card", id: "trace-feedback" }, h("h2", {}, "Feedback"), saved, feedback.node));

  function showSaved(trace) {
    if (trace.feedback_at === null || trace.feedback_at === undefined) {
      fill(saved, h("p", { class: "muted" }, "No feedback yet. A score, a label or a corrected output makes this trace ",
        "useful for datasets (slipway builds training rows from corrected outputs first)."));
      return;
    }
    fill(saved, h("dl", { class: "facts saved" },
      fact("Score", trace.feedback_score === null ? null : h("span", { id: "saved-score" }, trace.feedback_score.toFixed(2))),
      fact("Label", trace.feedback_label === null ? null : h("span", { id: "saved-label", class: "tag label" }, trace.feedback_label)),
      fact("Given", when(trace.feedback_at)),
      trace.corrected_output === null ? null
        : fact("Corrected output", h("pre", { id: "saved-corrected", class: "corrected" }, trace.corrected_output), { class: "wide" })));
  }

  return {
    async refresh() {
      const trace = await api(base);
      if (shown && shown.feedback_at === trace.feedback_at) return;
      const first = shown === null;
      shown = trace;
      fill(summary, h("dl", { class: "facts" },
        fact("Time", when(trace.created_at)),
        fact("Model", h("a", { href: tracesHash({ model: trace.model }) }, trace.model)),
        fact("Environment", trace.environment),
        fact("Deployment", trace.deployment_id ? h("a", { href: `#/deployments/${trace.deployment_id}` }, trace.deployment_id) : null),
        fact("Status", h("span", { class: trace.status_code >= 400 ? "pill pill-failed" : "pill pill-ok" }, trace.status_code)),
        fact("Latency", millis(trace.latency_ms)),
        fact("Tokens in → out", `${trace.prompt_tokens ?? "—"} → ${trace.completion_tokens ?? "—"}`),
        fact("Tags", trace.tags.length ? h("span", { class: "tags" },
          trace.tags.map((t) => h("a", { class: "tag", href: tracesHash({ tag: t }) }, t))) : null)));
      if (first) {
        fill(request, requestView(trace.request), rawJson("Request JSON", trace.request));
        fill(response, responseView(trace.response, trace.status_code), rawJson("Response JSON", trace.response));
        feedback.prefill(trace);
      }
      showSaved(trace);
    },
  };
}

/** The feedback form; `onSaved(trace)` gets the server's answer. Filled once, never under the visitor's typing. */
function feedbackForm(base, onSaved) {
  const score = h("input", { type: "number", id: "feedback-score", name: "score", min: 0, max: 1, step: "any",
    placeholder: "0 to 1" });
  const label = h("input", { id: "feedback-label", name: "label", maxlength: 100, placeholder: "e.g. wrong-tone" });
  const corrected = h("textarea", { id: "feedback-corrected", name: "corrected_output", rows: 5,
    placeholder: "The answer the model should have given" });
  const startFromAnswer = h("button", { type: "button", class: "plain small", id: "use-answer" }, "Start from the model's answer");
  const status = h("div", { class: "status" });
  let answer = "";
  startFromAnswer.addEventListener("click", () => {
    corrected.value = answer;
    corrected.focus();
  });
  const node = h("form", { class: "form-grid", id: "feedback" },
    h("div", {}, h("label", { for: "feedback-score" }, "Score"), score,
      h("small", { class: "muted" }, "0 is bad, 1 is good")),
    h("div", {}, h("label", { for: "feedback-label" }, "Label"), label,
      h("small", { class: "muted" }, "a short tag, up to 100 characters")),
    h("div", { class: "span-all" }, h("label", { for: "feedback-corrected" }, "Corrected output"), corrected,
      h("div", { class: "buttons under" }, startFromAnswer)),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Save feedback")),
    h("div", { class: "span-all" }, status));
  node.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {};
    if (score.value !== "") body.score = Number(score.value);
    if (label.value.trim()) body.label = label.value.trim();
    if (corrected.value.trim()) body.corrected_output = corrected.value;
    if (!Object.keys(body).length) {
      fill(status, errorBox({ message: "Give a score, a label or a corrected output first." }));
      return;
    }
    try {
      const trace = await api(`${base}/feedback`, { method: "POST", body });
      onSaved(trace);
      fill(status, h("p", { class: "ok", role: "status" }, "Saved."));
    } catch (error) {
      fill(status, errorBox({ message: `Not saved: ${error.message}` }));
    }
  });
  return {
    node,
    prefill(trace) {
      answer = answerText(trace.response);
      startFromAnswer.hidden = !answer;
      if (trace.feedback_score !== null) score.value = trace.feedback_score;
      if (trace.feedback_label !== null) label.value = trace.feedback_label;
      if (trace.corrected_output !== null) corrected.value = trace.corrected_output;
    },
  };
}
