// Usage: requests and units by model and key, from /api/v1/usage?group_by=model,key.

import { api } from "../api.js";
import { fill, h, number, table } from "../dom.js";

export function mount(root) {
  const body = h("div", {});
  fill(root, h("div", { class: "page-head" }, h("h1", {}, "Usage"),
    h("p", { class: "muted" }, "All time, by model and key.")), h("section", { class: "card" }, body));
  return {
    async refresh() {
      const [usage, keys] = await Promise.all([api("/api/v1/usage?group_by=model,key"), api("/api/v1/keys")]);
      const names = new Map(keys.data.map((k) => [k.id, k.name || k.prefix]));
      const rows = usage.data.map((u) => [
        u.model, h("span", { title: u.key_id }, names.get(u.key_id) || u.key_id || "—"),
        number(u.requests), number(u.input_units), number(u.output_units), number(u.errors),
        `${number(u.avg_latency_ms, 1)} ms`,
      ]);
      const total = usage.data.reduce((sum, u) => sum + u.requests, 0);
      fill(body,
        h("p", { class: "total" }, h("strong", { id: "usage-total" }, number(total)), " requests"),
        table(["Model", "Key", "Requests", "Input units", "Output units", "Errors", "Avg latency"], rows,
          { empty: "No requests yet. Call a model through the gateway and they show up here." }));
    },
  };
}
