// Datasets: name, rows for training and validation, content hash and age, newest first, paged with
// the API's cursor. A row opens the dataset; with none yet, how to make one.

import { api } from "../api.js";
import { emptyCard, fill, h, number, table, when } from "../dom.js";
import { pager } from "../pager.js";

const PAGE_SIZE = 25;
const SHORT_HASH = 12;

export function shortHash(hash) {
  return h("code", { title: `sha256 ${hash}` }, hash.slice(0, SHORT_HASH));
}

export function mount(root) {
  const list = h("div", { id: "datasets" });
  const pages = pager({ back: "Newer", forward: "Older", onChange: () => page.refresh() });
  fill(root, h("div", { class: "page-head" }, h("h1", {}, "Datasets"),
    h("p", { class: "muted" }, "Chat rows to fine-tune on, uploaded as JSONL or built from traces.")), list);
  const page = {
    async refresh() {
      const params = new URLSearchParams({ limit: PAGE_SIZE });
      if (pages.after) params.set("after", pages.after);
      const datasets = await api(`/api/v1/datasets?${params}`);
      pages.update(datasets.has_more, datasets.data.at(-1)?.id);
      if (!datasets.data.length && pages.index === 0) {
        fill(list, emptyState());
        return;
      }
      fill(list, h("section", { class: "card" },
        table(["Name", "Source", "Train rows", "Validation rows", "Content hash", "Created"], datasets.data.map((d) => [
          h("a", { href: `#/datasets/${encodeURIComponent(d.id)}`, class: "dataset-link", "data-dataset": d.id }, d.name),
          d.source, number(d.train_rows), number(d.validation_rows), shortHash(d.content_hash), when(d.created_at),
        ]), { empty: "No older datasets." }), pages.node));
    },
  };
  return page;
}

function emptyState() {
  return emptyCard("No datasets yet",
    "Upload OpenAI chat fine-tuning JSONL, one example per line ({\"messages\": [{\"role\": \"user\", …}, {\"role\": \"assistant\", …}]}); every bad line is reported by number:",
    { command: "slipway datasets create chats.jsonl --name support --validation-fraction 0.1" },
    "or build one from captured traces (corrected outputs are used first):",
    { command: `curl ${location.origin}/api/v1/datasets/from_traces \\\n` +
      '  -H "Authorization: Bearer $(cat ~/.slipway/admin.key)" \\\n' +
      `  -H "Content-Type: application/json" -d '{"name": "from-traces", "model": "MODEL", "min_feedback_score": 0.5}'` });
}
