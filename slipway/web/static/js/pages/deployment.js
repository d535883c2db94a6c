// One deployment: its status, live charts of the last hour, replicas (state, pid, url), the
// autoscaling settings, replica count and prices (all three editable), its recent errors, and the
// last log lines of each replica, all re-read every few seconds.

import { api } from "../api.js";
import { ago, errorBox, fill, h, pill, table } from "../dom.js";
import { metricsPanel, WINDOW } from "../metrics.js";

const AUTOSCALING = [
  ["min_replica", "Min replicas", "0 scales to zero when idle", "1"],
  ["max_replica", "Max replicas", "", "1"],
  ["concurrency_target", "Concurrency target", "in-flight requests per replica", "1"],
  ["scale_down_delay", "Scale-down delay (s)", "seconds of low load before removing replicas", "any"],
];
const PRICES = [
  ["per_1k_prompt_tokens", "Per 1k prompt tokens", "input units: prompt tokens, or a custom model's inputs"],
  ["per_1k_completion_tokens", "Per 1k completion tokens", "output units"],
  ["per_request", "Per request", "each successful request"],
  ["per_replica_hour", "Per replica-hour", "each hour one replica runs"],
];
const LOG_LINES = 50;
const ERRORS_SHOWN = 20;
const LIVE_STATES = new Set(["starting", "ready", "draining"]);

export function mount(root, [deploymentId]) {
  const base = `/api/v1/deployments/${encodeURIComponent(deploymentId)}`;
  const title = h("h1", {}, "Deployment");
  const summary = h("div", { class: "summary" });
  const replicas = h("div", {});
  const errors = h("div", {});
  const logs = logsPanel();
  const charts = metricsPanel();
  const page = { refresh };

  const autoscaling = settingsForm({
    id: "autoscaling", title: "Autoscaling", fields: AUTOSCALING, prefix: "as", button: "Save autoscaling",
    async save(inputs) {
      const changes = {};
      for (const [field] of AUTOSCALING) {
        if (inputs[field].value !== "") changes[field] = Number(inputs[field].value);
      }
      const saved = await api(`${base}/autoscaling`, { method: "PATCH", body: changes });
      fillAutoscaling(saved);
      await page.refresh();
    },
  });
  const pricing = settingsForm({
    id: "pricing", title: "Pricing", fields: PRICES, prefix: "price", button: "Save prices",
    note: "In one currency of your choice; an empty field means free. The Usage page turns these into cost.",
    async save(inputs) {
      const prices = Object.fromEntries(PRICES.map(([field]) =>
        [field, inputs[field].value === "" ? null : Number(inputs[field].value)]));
      fillPricing(await api(`${base}/pricing`, { method: "PATCH", body: prices }));
    },
  });
  const replicasInput = h("input", { type: "number", min: 0, step: 1, id: "scale-replicas", name: "replicas" });
  const scaleStatus = h("div", { class: "status" });
  const scaleForm = h("form", { class: "card form-grid", id: "scale" },
    h("h2", { class: "span-all" }, "Replicas now"),
    h("div", {}, h("label", { for: "scale-replicas" }, "Desired replicas"), replicasInput,
      h("small", { class: "muted" }, "sets min and max to this count")),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Scale")),
    h("div", { class: "span-all" }, scaleStatus));
  scaleForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const scaled = await api(`${base}/scale`, { method: "POST", body: { replicas: Number(replicasInput.value) } });
      fillAutoscaling(scaled);
      fill(scaleStatus, h("p", { class: "ok", role: "status" }, "Scaling."));
      await page.refresh();
    } catch (error) {
      fill(scaleStatus, errorBox({ message: `Not scaled: ${error.message}` }));
    }
  });
  let formsFilled = false;
  let pricingFilled = false;

  function fillAutoscaling(deployment) {
    autoscaling.fill(deployment.autoscaling);
    replicasInput.value = deployment.desired_replicas;
    formsFilled = true;
  }

  function fillPricing(prices) {
    pricing.fill(prices.pricing);
    pricingFilled = true;
  }

  fill(root,
    h("div", { class: "page-head" }, h("a", { href: "#/models", class: "back" }, "← Models"), title),
    h("section", { class: "card" }, summary),
    charts.node,
    h("section", { class: "card" }, h("h2", {}, "Replicas"), replicas),
    h("div", { class: "two-col" }, autoscaling.node, scaleForm),
    pricing.node,
    h("section", { class: "card", id: "errors" }, h("h2", {}, "Recent errors"), errors),
    h("section", { class: "card" }, h("h2", {}, `Recent logs (last ${LOG_LINES} lines per replica)`), logs.node));

  async function refresh() {
    const [deployment, replicaList, logList, metrics, errorList, prices] = await Promise.all([
      api(base), api(`${base}/replicas`), api(`${base}/logs?tail=${LOG_LINES}`), api(`${base}/metrics?window=${WINDOW}`),
      api(`${base}/errors?limit=${ERRORS_SHOWN}`), pricingFilled ? null : api(`${base}/pricing`)]);
    fill(title, `${deployment.model} #${deployment.number}`);
    if (!formsFilled) fillAutoscaling(deployment);
    if (prices) fillPricing(prices);
    const a = deployment.autoscaling;
    fill(summary, h("dl", { class: "facts" },
      fact("Status", pill(deployment.status)),
      fact("Replicas ready / desired", h("span", { id: "ready-replicas" }, `${deployment.ready_replicas}/${deployment.desired_replicas}`)),
      fact("Autoscaling", h("span", { id: "autoscaling-now" },
        `min ${a.min_replica ?? "—"} · max ${a.max_replica ?? "—"} · target ${a.concurrency_target ?? "—"} · down after ${a.scale_down_delay ?? "—"}s`)),
      fact("Kind", deployment.kind),
      fact("Created", ago(deployment.created_at)),
      deployment.status_detail ? detailFact(deployment.status_detail) : null));
    charts.update(metrics, deployment);
    fill(replicas, table(["Replica", "State", "PID", "URL", "Restarts", "Started"],
      replicaList.data.map((r) => [h("code", {}, r.id), pill(r.state), r.pid ?? "—", r.url ?? "—", r.restarts, ago(r.started_at)]),
      { empty: "No replicas running." }));
    fill(errors, table(["When", "What", "Status", "Request / replica", "Message"],
      errorList.data.map((e) => [
        h("span", { title: new Date(e.at * 1000).toISOString() }, ago(e.at)),
        e.source, h("span", { class: "pill pill-failed" }, e.status), h("code", {}, e.request_id || e.replica_id),
        h("span", { class: "message" }, e.message)]),
      { empty: "No errors: no request failed with status 500 or above, and no replica failed or crashed." }));
    logs.update(logList.data);
  }

  return page;
}

/** A card form of number fields that PATCHes through `save(inputs)` and says inline how it went. */
function settingsForm({ id, title, fields, prefix, button, note, save }) {
  const inputs = Object.fromEntries(fields.map(([field, , , step]) => [field,
    h("input", { type: "number", min: 0, step: step || "any", id: `${prefix}-${field}`, name: field })]));
  const status = h("div", { class: "status" });
  const node = h("form", { class: "card form-grid", id },
    h("h2", { class: "span-all" }, title),
    note ? h("p", { class: "muted span-all note" }, note) : null,
    fields.map(([field, label, hint]) => h("div", {},
      h("label", { for: `${prefix}-${field}` }, label), inputs[field], hint ? h("small", { class: "muted" }, hint) : null)),
    h("div", { class: "actions" }, h("button", { type: "submit" }, button)),
    h("div", { class: "span-all" }, status));
  node.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await save(inputs);
      fill(status, h("p", { class: "ok", role: "status" }, "Saved."));
    } catch (error) {
      fill(status, errorBox({ message: `Not saved: ${error.message}` }));
    }
  });
  return {
    node,
    fill(values) {
      for (const [field] of fields) inputs[field].value = values[field] ?? "";
    },
  };
}

/** Each replica's last lines, live and failed replicas open; one someone opened or scrolled stays so. */
function logsPanel() {
  const node = h("div", { class: "logs", id: "logs" });
  const panes = new Map();

  function pane(entry) {
    let found = panes.get(entry.replica_id);
    if (!found) {
      const summary = h("summary", {});
      const pre = h("pre", {});
      const open = LIVE_STATES.has(entry.state) || entry.state === "failed";
      const details = h("details", { open, "data-replica": entry.replica_id }, summary, pre);
      found = { details, summary, pre };
      panes.set(entry.replica_id, found);
    }
    fill(found.summary, h("code", {}, entry.replica_id), " ", pill(entry.state), ` started ${ago(entry.started_at)}`);
    const text = entry.logs || "(no output yet)";
    if (found.pre.textContent !== text) {
      const { pre } = found;
      const following = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent = text;
      if (following) pre.scrollTop = pre.scrollHeight;
    }
    return found.details;
  }

  function update(entries) {
    const shown = entries.map(pane);
    const ids = new Set(entries.map((e) => e.replica_id));
    for (const id of [...panes.keys()]) if (!ids.has(id)) panes.delete(id);
    if (!shown.length) {
      fill(node, h("p", { class: "muted" }, "No logs yet: this deployment has not started a replica."));
      return;
    }
    const same = shown.length === node.children.length && shown.every((d, i) => node.children[i] === d);
    if (!same) node.replaceChildren(...shown);
  }

  return { node, update };
}

function fact(label, value, attrs = {}) {
  return h("div", attrs, h("dt", {}, label), h("dd", {}, value));
}

/** A short detail as it is; a long one (a failed load's log) as its key line, the rest folded. */
function detailFact(detail) {
  const lines = detail.split("\n").map((line) => line.trim()).filter(Boolean);
  if (lines.length <= 2) return fact("Detail", h("span", { class: "detail" }, detail), { class: "wide" });
  // The line that says what went wrong: a traceback's last line, not code, carets or JSON log lines.
  const said = lines.filter((line) => !/^(File |\^|~|\{|replica )/.test(line) && line.includes(":"));
  return fact("Detail", h("details", { class: "detail-folded" },
    h("summary", {}, said.at(-1) || lines[0]), h("pre", {}, detail)), { class: "wide" });
}
