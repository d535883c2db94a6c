// Models: each model with its environments and deployments (status, replicas ready/desired).

import { api } from "../api.js";
import { ago, fill, h, pill, table } from "../dom.js";

export function mount(root) {
  const list = h("div", { class: "stack" });
  fill(root, h("div", { class: "page-head" }, h("h1", {}, "Models")), list);
  return {
    async refresh() {
      const summaries = (await api("/api/v1/models")).data;
      if (!summaries.length) {
        fill(list, emptyState());
        return;
      }
      const details = await Promise.all(summaries.map((m) => api(`/api/v1/models/${encodeURIComponent(m.name)}`)));
      fill(list, details.map(modelCard));
    },
  };
}

function emptyState() {
  return h("div", { class: "card empty" },
    h("h2", {}, "No models yet"),
    h("p", {}, "Deploy the example model from a terminal in the slipway folder:"),
    h("pre", {}, h("code", {}, "slipway deploy examples/echo --promote")));
}

function modelCard(model) {
  const numberOf = new Map(model.deployments.map((d) => [d.id, d.number]));
  const environments = model.environments.map((env) => h("span", { class: "env" },
    h("strong", {}, env.name), " → ",
    env.deployment_id ? h("a", { href: `#/deployments/${env.deployment_id}` }, `#${numberOf.get(env.deployment_id)}`) : "none",
    env.pending_deployment_id ? ` (taking over: #${numberOf.get(env.pending_deployment_id)})` : ""));
  const rows = [...model.deployments].sort((a, b) => b.number - a.number).map((d) => [
    h("a", { href: `#/deployments/${d.id}`, class: "deployment-link" }, `#${d.number}`),
    pill(d.status),
    h("span", { class: "replicas" }, `${d.ready_replicas}/${d.desired_replicas}`),
    d.kind,
    ago(d.created_at),
  ]);
  return h("section", { class: "card model", "data-model": model.name },
    h("div", { class: "card-head" }, h("h2", {}, model.name), h("div", { class: "envs" }, environments)),
    table(["Deployment", "Status", "Ready / desired", "Kind", "Created"], rows, { empty: "No deployments." }));
}
