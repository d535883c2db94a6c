// One deployment: its status, live charts of the last hour, replicas (state, pid, url),
// autoscaling settings and replica count (both editable), and the recent log lines of each replica.

import { api } from "../api.js";
import { ago, errorBox, fill, h, pill, table } from "../dom.js";
import { metricsPanel, WINDOW } from "../metrics.js";

const SETTINGS = [
  ["min_replica", "Min replicas", "0 scales to zero when idle"],
  ["max_replica", "Max replicas", ""],
  ["concurrency_target", "Concurrency target", "in-flight requests per replica"],
  ["scale_down_delay", "Scale-down delay (s)", "seconds of low load before removing replicas"],
];
const LOG_LINES = 50;

export function mount(root, [deploymentId]) {
  const base = `/api/v1/deployments/${encodeURIComponent(deploymentId)}`;
  const title = h("h1", {}, "Deployment");
  const summary = h("div", { class: "summary" });
  const replicas = h("div", {});
  const logs = h("div", { class: "logs" });
  const charts = metricsPanel();
  const inputs = Object.fromEntries(SETTINGS.map(([field]) => [field,
    h("input", { type: "number", min: 0, step: field === "scale_down_delay" ? "any" : 1, id: `as-${field}`, name: field })]));
  const autoscalingStatus = h("div", { class: "status" });
  const autoscalingForm = h("form", { class: "card form-grid", id: "autoscaling" },
    h("h2", { class: "span-all" }, "Autoscaling"),
    SETTINGS.map(([field, label, hint]) => h("div", {},
      h("label", { for: `as-${field}` }, label), inputs[field], hint ? h("small", { class: "muted" }, hint) : null)),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Save autoscaling")),
    h("div", { class: "span-all" }, autoscalingStatus));
  const replicasInput = h("input", { type: "number", min: 0, step: 1, id: "scale-replicas", name: "replicas" });
  const scaleStatus = h("div", { class: "status" });
  const scaleForm = h("form", { class: "card form-grid", id: "scale" },
    h("h2", { class: "span-all" }, "Replicas now"),
    h("div", {}, h("label", { for: "scale-replicas" }, "Desired replicas"), replicasInput,
      h("small", { class: "muted" }, "the autoscaler keeps it between min and max")),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Scale")),
    h("div", { class: "span-all" }, scaleStatus));
  let formsFilled = false;

  function fillForms(deployment) {
    for (const [field] of SETTINGS) inputs[field].value = deployment.autoscaling[field] ?? "";
    replicasInput.value = deployment.desired_replicas;
    formsFilled = true;
  }

  autoscalingForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const changes = {};
    for (const [field] of SETTINGS) {
      if (inputs[field].value !== "") changes[field] = Number(inputs[field].value);
    }
    try {
      const saved = await api(`${base}/autoscaling`, { method: "PATCH", body: changes });
      fillForms(saved);
      fill(autoscalingStatus, h("p", { class: "ok", role: "status" }, "Saved."));
      await page.refresh();
    } catch (error) {
      fill(autoscalingStatus, errorBox(error));
    }
  });
  scaleForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api(`${base}/scale`, { method: "POST", body: { replicas: Number(replicasInput.value) } });
      fill(scaleStatus, h("p", { class: "ok", role: "status" }, "Scaling."));
      await page.refresh();
    } catch (error) {
      fill(scaleStatus, errorBox(error));
    }
  });

  fill(root,
    h("div", { class: "page-head" }, h("a", { href: "#/models", class: "back" }, "← Models"), title),
    h("section", { class: "card" }, summary),
    charts.node,
    h("section", { class: "card" }, h("h2", {}, "Replicas"), replicas),
    h("div", { class: "two-col" }, autoscalingForm, scaleForm),
    h("section", { class: "card" }, h("h2", {}, `Recent logs (last ${LOG_LINES} lines per replica)`), logs));

  const page = {
    async refresh() {
      const [deployment, replicaList, logList, metrics] = await Promise.all([
        api(base), api(`${base}/replicas`), api(`${base}/logs?tail=${LOG_LINES}`), api(`${base}/metrics?window=${WINDOW}`)]);
      fill(title, `${deployment.model} #${deployment.number}`);
      if (!formsFilled) fillForms(deployment);
      const a = deployment.autoscaling;
      fill(summary, h("dl", { class: "facts" },
        fact("Status", pill(deployment.status)),
        fact("Replicas ready / desired", h("span", { id: "ready-replicas" }, `${deployment.ready_replicas}/${deployment.desired_replicas}`)),
        fact("Autoscaling", h("span", { id: "autoscaling-now" },
          `min ${a.min_replica ?? "—"} · max ${a.max_replica ?? "—"} · target ${a.concurrency_target ?? "—"} · down after ${a.scale_down_delay ?? "—"}s`)),
        fact("Kind", deployment.kind),
        fact("Created", ago(deployment.created_at)),
        deployment.status_detail ? fact("Detail", h("span", { class: "detail" }, deployment.status_detail)) : null));
      charts.update(metrics, deployment);
      fill(replicas, table(["Replica", "State", "PID", "URL", "Restarts", "Started"],
        replicaList.data.map((r) => [h("code", {}, r.id), pill(r.state), r.pid ?? "—", r.url ?? "—", r.restarts, ago(r.started_at)]),
        { empty: "No replicas running." }));
      fill(logs, logList.data.length ? logList.data.map((r) => h("details", { open: true },
        h("summary", {}, `${r.replica_id} (${r.state})`),
        h("pre", {}, r.logs || "(no output yet)"))) : h("p", { class: "muted" }, "No logs yet."));
    },
  };
  return page;
}

function fact(label, value) {
  return h("div", {}, h("dt", {}, label), h("dd", {}, value));
}
