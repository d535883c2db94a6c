// The deployment page's live charts: requests, latency, time to first token, tokens, load and
// replicas over the last hour, from GET /api/v1/deployments/{id}/metrics. Each chart says what to
// do next when it has nothing to show.

import { latest, lineChart } from "./charts.js";
import { fill, h } from "./dom.js";

export const WINDOW = "1h";
// A young deployment's few minutes are drawn over at least this many seconds, not squeezed into
// the right edge of an hour.
const MIN_SPAN_SECONDS = 300;

const rate = (v) => String(Number(v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)));
const count = (v) => (Number.isInteger(v) ? String(v) : v.toFixed(1));
function duration(seconds) {
  if (seconds === 0) return "0";
  const ms = seconds * 1000;
  if (ms < 10) return `${Number(ms.toFixed(1))} ms`;
  if (ms < 1000) return `${ms.toFixed(0)} ms`;
  return `${Number(seconds.toFixed(seconds < 10 ? 2 : 1))} s`;
}

const errorsPerSecond = (p) => (p.error_rate === null ? 0 : p.requests_per_second * p.error_rate);
const hadTraffic = (points) => points.some((p) => p.requests_per_second > 0);

const CHARTS = [
  { id: "requests", title: "Requests / s", format: rate, unit: "/s",
    series: [["requests", (p) => p.requests_per_second], ["errors", errorsPerSecond]],
    shows: hadTraffic, empty: (d) => noTraffic(d) },
  { id: "latency", title: "Latency", format: duration, unit: "",
    series: [["p50", (p) => p.latency_p50_seconds], ["p99", (p) => p.latency_p99_seconds]],
    shows: hadTraffic, empty: () => "No requests in the last hour, so no latency yet." },
  { id: "ttft", title: "Time to first token", format: duration, unit: "",
    series: [["p50", (p) => p.ttft_p50_seconds], ["p99", (p) => p.ttft_p99_seconds]],
    shows: (points) => points.some((p) => p.ttft_p50_seconds !== null), empty: (d) => llmOnly(d, "time to first token") },
  { id: "tokens", title: "Output tokens / s", format: rate, unit: "/s",
    series: [["tokens", (p) => p.output_tokens_per_second]],
    shows: (points) => points.some((p) => p.output_tokens_per_second > 0), empty: (d) => llmOnly(d, "generated tokens") },
  { id: "in-flight", title: "In flight", format: count, unit: "",
    series: [["in flight", (p) => p.in_flight], ["queued", (p) => p.queued]],
    shows: (points) => points.some((p) => p.in_flight !== null || p.queued !== null),
    empty: (d) => notSampled(d, "No load figures yet: they arrive with the control loop's next ticks.") },
  { id: "replicas", title: "Replicas", format: count, unit: "",
    series: [["ready", (p) => p.replicas_ready], ["desired", (p) => p.replicas_desired, "dashed"]],
    shows: (points) => points.length > 0,
    empty: (d) => notSampled(d, "No samples yet: the control plane records one every second while it runs.") },
];

function requestCommand(deployment) {
  const body = {
    llm: '{"messages": [{"role": "user", "content": "Hello"}]}',
    embedding: '{"input": "hello"}',
  }[deployment.kind] || '{"text": "hello"}';
  return `curl ${location.origin}/deployments/${deployment.id}/predict \\\n` +
    '  -H "Authorization: Bearer $SLIPWAY_API_KEY" \\\n' +
    `  -H "Content-Type: application/json" -d '${body}'`;
}

function noTraffic(deployment) {
  if (deployment.status === "failed") return notSampled(deployment, "");
  return [h("p", {}, "No traffic yet. Send a request with an invoke key (see API keys):"),
    h("pre", {}, h("code", {}, requestCommand(deployment)))];
}

function llmOnly(deployment, what) {
  if (deployment.kind !== "llm") return `Measured for LLM deployments (kind: llm); this one is kind ${deployment.kind}.`;
  return `No ${what} yet: send a chat request, e.g. with the command under Requests / s.`;
}

function notSampled(deployment, otherwise) {
  if (deployment.status === "inactive" || deployment.status === "failed") {
    return `This deployment is ${deployment.status}: nothing runs, so nothing new is recorded.`;
  }
  return otherwise;
}

/** The charts section; call update(metrics, deployment) with each refresh's data. */
export function metricsPanel() {
  const cards = new Map(CHARTS.map((chart) => {
    const legend = h("div", { class: "legend" });
    const body = h("div", { class: "chart-body" });
    const card = h("div", { class: "chart-card", "data-chart": chart.id },
      h("div", { class: "chart-head" }, h("h3", {}, chart.title), legend), body);
    return [chart.id, { card, legend, body }];
  }));
  const node = h("section", { class: "card", id: "charts" },
    h("h2", {}, "Last hour"),
    h("div", { class: "charts" }, [...cards.values()].map((c) => c.card)));

  function update(metrics, deployment) {
    const points = metrics.data;
    const steps = points.map((p) => p.step);
    const start = points.length
      ? Math.max(metrics.start, Math.min(points[0].t, metrics.end - MIN_SPAN_SECONDS)) : metrics.start;
    for (const chart of CHARTS) {
      const { card, legend, body } = cards.get(chart.id);
      const shown = chart.shows(points);
      card.dataset.hasData = String(shown);
      if (!shown) {
        legend.replaceChildren();
        fill(body, h("div", { class: "chart-empty muted" }, chart.empty(deployment)));
        continue;
      }
      const series = chart.series.map(([label, read, style]) => ({
        label, style, steps, points: points.map((p) => [p.t, read(p)]) }));
      fill(legend, series.map((s, index) => {
        const value = latest(s.points);
        return h("span", { class: `legend-item series-${index}` }, h("span", { class: "swatch" }),
          `${s.label} ${value === null ? "—" : chart.format(value) + chart.unit}`);
      }));
      const width = Math.floor(body.clientWidth) || 600;
      fill(body, lineChart({ start, end: metrics.end, width, series, format: chart.format,
        label: `${chart.title} over the last hour` }));
    }
  }

  return { node, update };
}
