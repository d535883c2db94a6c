// Models: each model with the environments its deployments serve, and its deployments (status,
// replicas ready/desired, the last hour of requests). One request, GET /api/v1/deployments, however
// many models there are.

import { api } from "../api.js";
import { sparkline } from "../charts.js";
import { ago, fill, h, number, pill, table } from "../dom.js";

export function mount(root) {
  const list = h("div", { class: "stack", id: "models" });
  fill(root, h("div", { class: "page-head" }, h("h1", {}, "Models")), list);
  return {
    async refresh() {
      const deployments = (await api("/api/v1/deployments")).data;
      if (!deployments.length) {
        fill(list, emptyState());
        return;
      }
      const byModel = new Map();
      for (const d of deployments) {
        if (!byModel.has(d.model)) byModel.set(d.model, []);
        byModel.get(d.model).push(d);
      }
      fill(list, [...byModel].map(([name, rows]) => modelCard(name, rows)));
    },
  };
}

function emptyState() {
  return h("div", { class: "card empty" },
    h("h2", {}, "No models yet"),
    h("p", {}, "Deploy the example model from a terminal in the slipway folder:"),
    h("pre", {}, h("code", {}, "slipway deploy examples/minilm --promote")));
}

function modelCard(name, deployments) {
  const newestFirst = [...deployments].sort((a, b) => b.number - a.number);
  const environments = newestFirst.flatMap((d) => [
    ...d.environments.map((env) => h("span", { class: "env" }, h("strong", {}, env), " → ",
      h("a", { href: `#/deployments/${d.id}` }, `#${d.number}`))),
    ...d.pending_environments.map((env) => h("span", { class: "env muted" }, `${env}: #${d.number} takes over once ready`)),
    ...(d.canary_environments || []).map((c) => h("span", { class: "env canary" }, h("strong", {}, c.environment),
      ` canary: ${c.percent}% → `, h("a", { href: `#/deployments/${d.id}` }, `#${d.number}`))),
  ]);
  const rows = newestFirst.map((d) => [
    h("a", { href: `#/deployments/${d.id}`, class: "deployment-link" }, `#${d.number}`),
    pill(d.status),
    h("span", { class: "replicas" }, `${d.ready_replicas}/${d.desired_replicas}`),
    d.environments.join(", ") || h("span", { class: "muted" }, "—"),
    traffic(d),
    d.kind,
    ago(d.created_at),
  ]);
  return h("section", { class: "card model", "data-model": name },
    h("div", { class: "card-head" }, h("h2", {}, name), h("div", { class: "envs" }, environments)),
    table(["Deployment", "Status", "Ready / desired", "Serves", "Requests, last hour", "Kind", "Created"], rows,
      { empty: "No deployments." }));
}

function traffic(deployment) {
  const { requests, errors, requests_per_bucket: slices } = deployment.traffic;
  return h("span", { class: "traffic" },
    sparkline(slices, { label: `requests per 5 minutes over the last hour of #${deployment.number}` }),
    h("span", { class: "traffic-count" }, number(requests)),
    errors ? h("span", { class: "traffic-errors" }, `${number(errors)} errors`) : null);
}
