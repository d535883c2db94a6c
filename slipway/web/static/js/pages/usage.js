// Usage: requests, units and cost by model and key, and replica time per deployment, from
// /api/v1/usage?group_by=model,key. Costs use each deployment's prices (set on its page).

import { api } from "../api.js";
import { fill, h, number, table } from "../dom.js";

export function money(value) {
  if (value === null || value === undefined) return "—";
  const digits = Math.abs(value) >= 1 || value === 0 ? 2 : 4;
  return Number(value).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: digits });
}

export function mount(root) {
  const body = h("div", {});
  const replicas = h("div", {});
  fill(root,
    h("div", { class: "page-head" }, h("h1", {}, "Usage"), h("p", { class: "muted" }, "All time, by model and key.")),
    h("section", { class: "card" }, body),
    h("section", { class: "card", id: "replica-time" }, h("h2", {}, "Replica time"), replicas));
  return {
    async refresh() {
      const [usage, keys] = await Promise.all([api("/api/v1/usage?group_by=model,key"), api("/api/v1/keys")]);
      const names = new Map(keys.data.map((k) => [k.id, k.name || k.prefix]));
      const rows = usage.data.map((u) => [
        u.model, h("span", { title: u.key_id }, names.get(u.key_id) || u.key_id || "—"),
        number(u.requests), number(u.input_units), number(u.output_units), number(u.errors),
        `${number(u.avg_latency_ms, 1)} ms`, h("span", { class: "cost" }, money(u.cost)),
      ]);
      const total = usage.data.reduce((sum, u) => sum + u.requests, 0);
      fill(body,
        h("p", { class: "total" }, h("strong", { id: "usage-total" }, number(total)), " requests",
          " · cost ", h("strong", { id: "usage-cost" }, money(usage.total_cost))),
        table(["Model", "Key", "Requests", "Input units", "Output units", "Errors", "Avg latency", "Cost"], rows,
          { empty: "No requests yet. Call a model through the gateway and they show up here." }),
        h("p", { class: "muted hint" }, "Cost counts successful requests at each deployment's prices; ",
          "set them under Pricing on a deployment's page. Failed requests cost nothing."));
      fill(replicas, table(["Model", "Deployment", "Replica-hours", "Price / hour", "Cost"],
        usage.replicas.map((r) => [r.model, h("a", { href: `#/deployments/${r.deployment_id}` }, `#${r.number}`),
          number(r.replica_hours, 2), money(r.per_replica_hour), money(r.cost)]),
        { empty: "No replica has run yet." }));
    },
  };
}
