// One dataset: its rows, full content hash, where it came from (an upload, or the trace filter it
// was built with), the fine-tuning jobs that use it, and the command to train on it.

import { api } from "../api.js";
import { fact, fill, h, number, pill, table, when } from "../dom.js";
import { shortHash } from "./datasets.js";

// The jobs listed here are those among the newest this many.
const JOBS_LOOKED_AT = 100;

export function mount(root, [rawId]) {
  const datasetId = decodeURIComponent(rawId);
  const title = h("h1", {}, "Dataset");
  const summary = h("div", {});
  const jobs = h("div", {});
  const train = h("div", {});
  fill(root,
    h("div", { class: "page-head" }, title, h("code", { class: "muted" }, datasetId),
      h("a", { href: "#/datasets" }, "← all datasets")),
    h("section", { class: "card" }, summary),
    h("section", { class: "card", id: "dataset-jobs" }, h("h2", {}, "Fine-tuning jobs on it"), jobs),
    h("section", { class: "card empty" }, h("h2", {}, "Train on it"), train));
  return {
    async refresh() {
      const [dataset, jobList] = await Promise.all([api(`/api/v1/datasets/${encodeURIComponent(datasetId)}`),
        api(`/api/v1/fine_tuning/jobs?limit=${JOBS_LOOKED_AT}`)]);
      fill(title, dataset.name);
      fill(summary, h("dl", { class: "facts" },
        fact("Train rows", h("span", { id: "dataset-train-rows" }, number(dataset.train_rows))),
        fact("Validation rows", h("span", { id: "dataset-validation-rows" }, number(dataset.validation_rows))),
        fact("Source", dataset.source),
        fact("Created", when(dataset.created_at)),
        fact("Content hash (sha256)", h("code", { class: "hash", id: "dataset-hash" }, dataset.content_hash), { class: "wide" }),
        dataset.filters ? fact("Built from traces matching", h("span", { class: "tags" },
          Object.entries(dataset.filters).map(([k, v]) => h("span", { class: "tag" }, `${k} ${JSON.stringify(v)}`))),
        { class: "wide" }) : null));
      const using = jobList.data.filter((j) => j.training_file === dataset.id || j.validation_file === dataset.id);
      fill(jobs, table(["Job", "Status", "Base model", "Fine-tuned model", "Created"], using.map((j) => [
        h("a", { href: `#/fine-tuning/${encodeURIComponent(j.id)}` }, h("code", {}, j.id)), pill(j.status), j.model,
        j.fine_tuned_model || h("span", { class: "muted" }, "—"), when(j.created_at),
      ]), { empty: "No fine-tuning job uses this dataset yet." }));
      fill(train, h("p", {}, "Fine-tune a LoRA adapter of a deployed llm model on these rows (content ", shortHash(dataset.content_hash), "):"),
        h("pre", {}, h("code", {}, `slipway train --model MODEL --dataset ${dataset.id}`)));
    },
  };
}
