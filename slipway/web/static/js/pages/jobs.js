// Fine-tuning jobs: status, base model, the fine-tuned model, the dataset, when created and
// finished, newest first and paged with the API's cursor. A row opens the job and its loss curve.

import { api } from "../api.js";
import { emptyCard, fill, h, pill, table, when } from "../dom.js";
import { pager } from "../pager.js";

const PAGE_SIZE = 25;

export function mount(root) {
  const list = h("div", { id: "jobs" });
  const pages = pager({ back: "Newer", forward: "Older", onChange: () => page.refresh() });
  fill(root, h("div", { class: "page-head" }, h("h1", {}, "Fine-tuning jobs"),
    h("p", { class: "muted" }, "LoRA adapters trained on datasets, newest first.")), list);
  const page = {
    async refresh() {
      const params = new URLSearchParams({ limit: PAGE_SIZE });
      if (pages.after) params.set("after", pages.after);
      const jobs = await api(`/api/v1/fine_tuning/jobs?${params}`);
      pages.update(jobs.has_more, jobs.data.at(-1)?.id);
      if (!jobs.data.length && pages.index === 0) {
        fill(list, emptyState());
        return;
      }
      fill(list, h("section", { class: "card" },
        table(["Job", "Status", "Base model", "Fine-tuned model", "Dataset", "Created", "Finished"], jobs.data.map((j) => [
          h("a", { href: `#/fine-tuning/${encodeURIComponent(j.id)}`, class: "job-link", "data-job": j.id }, h("code", {}, j.id)),
          pill(j.status), j.model, j.fine_tuned_model || h("span", { class: "muted" }, "—"),
          h("a", { href: `#/datasets/${encodeURIComponent(j.training_file)}` }, h("code", {}, j.training_file)),
          when(j.created_at), when(j.finished_at),
        ]), { empty: "No older jobs." }), pages.node));
    },
  };
  return page;
}

function emptyState() {
  return emptyCard("No fine-tuning jobs yet",
    "Train a LoRA adapter of a deployed llm model on a dataset (a JSONL file is uploaded first); the command follows the job with a progress bar:",
    { command: "slipway train --model smollm2 --dataset chats.jsonl --epochs 2" },
    "or with OpenAI's client, pointed at this server's management API and an admin key:",
    { command: `client = OpenAI(base_url="${location.origin}/api/v1", api_key=ADMIN_KEY)\n` +
      'client.fine_tuning.jobs.create(model="smollm2", training_file="ds-…")' });
}
