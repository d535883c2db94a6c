// One fine-tuning job: status and progress, the loss curve, hyperparameters, checkpoints and
// events (newest first), and a Cancel button while it has not finished. An unfinished job is
// re-read every few seconds; a finished one is read once more and then left alone.
//
// The loss curve is drawn from what the job process records (slipway.train.lora), in OpenAI's shape:
//   events of type "metrics"   data {step, total_steps, train_loss, ...}   one per optimizer step
//   checkpoint events          data {step, metrics: {valid_loss, ...}}     one per checkpoint
//   checkpoints                metrics {step, train_loss, valid_loss}      the ones kept on disk
// Validation loss is measured only at checkpoints, so its line has fewer points.

import { api } from "../api.js";
import { latest, lineChart } from "../charts.js";
import { confirmButton, errorBox, fact, fill, h, number, pill, table, when } from "../dom.js";

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const EVENTS_PAGE = 500; // the most the events route gives at once
// Bounds what one page keeps in memory: a job of more steps shows its newest events and curve.
const MAX_EVENT_PAGES = 40;
const EVENTS_SHOWN = 200;

const CHART_HEIGHT = 220;

const loss = (v) => (v === 0 ? "0" : v >= 10 ? v.toFixed(1) : v >= 1 ? v.toFixed(2) : v.toFixed(3));

export function mount(root, [rawId]) {
  const jobId = decodeURIComponent(rawId);
  const base = `/api/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}`;
  const title = h("h1", {}, "Fine-tuning job");
  const status = h("span", {});
  const summary = h("div", {});
  const progress = h("div", { id: "job-progress" });
  const legend = h("div", { class: "legend" });
  const chart = h("div", { class: "chart-body", id: "loss-chart" });
  const hyperparameters = h("div", { id: "hyperparameters" });
  const checkpoints = h("div", { id: "checkpoints" });
  const eventList = h("div", { id: "events" });
  const hideSteps = h("input", { type: "checkbox", id: "hide-step-events" });
  const actionStatus = h("div", { class: "status" });
  const cancel = confirmButton(h("button", { type: "button", class: "danger", id: "cancel-job", hidden: true }, "Cancel job"),
    "Confirm cancel", async () => {
      try {
        await api(`${base}/cancel`, { method: "POST" });
        fill(actionStatus, h("p", { class: "ok", role: "status" }, "Cancelled: a running job stops after saving a checkpoint."));
        await page.refresh();
      } catch (error) {
        fill(actionStatus, errorBox({ message: `Not cancelled: ${error.message}` }));
      }
    });
  // Every event read so far, newest first, in the API's order (ids are not ordered; created_at ties).
  let events = [];
  const known = new Set();
  let settled = false;
  let lastJob = null;

  hideSteps.addEventListener("change", () => drawEvents());
  fill(root,
    h("div", { class: "page-head" }, title, status, h("code", { class: "muted" }, jobId),
      h("a", { href: "#/fine-tuning" }, "← all jobs"), h("span", { class: "spacer" }), cancel),
    actionStatus,
    h("section", { class: "card" }, summary, progress),
    h("section", { class: "card", id: "loss" },
      h("div", { class: "chart-head" }, h("h2", {}, "Loss"), legend), chart),
    h("div", { class: "two-col" },
      h("section", { class: "card" }, h("h2", {}, "Checkpoints"), checkpoints),
      h("section", { class: "card" }, h("h2", {}, "Hyperparameters"), hyperparameters)),
    h("section", { class: "card" },
      h("div", { class: "card-head" }, h("h2", {}, "Events"),
        h("label", { class: "check", for: "hide-step-events" }, hideSteps, "hide per-step metrics")),
      eventList));

  /** Read the events not seen yet: newest pages until one holds an event already known. */
  async function readEvents() {
    const fresh = [];
    let after = null;
    for (let pages = 0; pages < MAX_EVENT_PAGES; pages += 1) {
      const listing = await api(`${base}/events?limit=${EVENTS_PAGE}${after ? `&after=${encodeURIComponent(after)}` : ""}`);
      const reachedKnown = listing.data.findIndex((e) => known.has(e.id));
      const unseen = reachedKnown === -1 ? listing.data : listing.data.slice(0, reachedKnown);
      fresh.push(...unseen);
      if (reachedKnown !== -1 || !listing.has_more || !listing.data.length) break;
      after = listing.data.at(-1).id;
    }
    // Two overlapping reads (a refresh and the one after Cancel) may both return an event.
    const unseen = fresh.filter((event) => !known.has(event.id));
    for (const event of unseen) known.add(event.id);
    events = unseen.concat(events);
  }

  function drawEvents() {
    const shown = events.filter((e) => !(hideSteps.checked && e.type === "metrics")).slice(0, EVENTS_SHOWN);
    fill(eventList, table(["Time", "Level", "Message"], shown.map((e) => [
      when(e.created_at), pill(e.level), h("span", { class: `message${e.type === "metrics" ? " muted" : ""}` }, e.message),
    ]), { empty: "No events yet: the job writes its first when it starts validating its files." }),
    events.length > EVENTS_SHOWN ? h("p", { class: "muted hint" }, `The newest ${EVENTS_SHOWN} of ${number(events.length)} events.`) : null);
  }

  const page = {
    async refresh() {
      if (settled) return;
      const [job, checkpointList] = await Promise.all([api(base), api(`${base}/checkpoints?limit=100`), readEvents()]);
      lastJob = job;
      fill(title, job.fine_tuned_model || job.suffix || "Fine-tuning job");
      fill(status, pill(job.status));
      cancel.hidden = FINISHED.has(job.status);
      const curves = lossCurves(events, checkpointList.data);
      fill(summary, h("dl", { class: "facts" },
        fact("Status", h("span", { id: "job-status" }, pill(job.status))),
        fact("Base model", job.model),
        fact("Fine-tuned model", job.fine_tuned_model ? h("code", { id: "fine-tuned-model" }, job.fine_tuned_model) : null),
        fact("Training data", h("a", { href: `#/datasets/${encodeURIComponent(job.training_file)}` }, h("code", {}, job.training_file))),
        fact("Validation data", job.validation_file ? h("a", { href: `#/datasets/${encodeURIComponent(job.validation_file)}` },
          h("code", {}, job.validation_file)) : "the training dataset's validation split"),
        fact("Trained tokens", job.trained_tokens === null ? null : number(job.trained_tokens)),
        fact("Seed", job.seed),
        fact("Created", when(job.created_at)),
        fact("Finished", when(job.finished_at)),
        job.error ? fact("Error", h("span", { class: "error" }, `${job.error.code}: ${job.error.message}`), { class: "wide" }) : null));
      drawProgress(curves, job);
      drawLoss(curves);
      fill(hyperparameters, h("dl", { class: "facts compact" }, Object.entries(job.hyperparameters).map(([key, value]) =>
        fact(key, h("code", {}, typeof value === "string" ? value : JSON.stringify(value))))));
      fill(checkpoints, table(["Step", "Train loss", "Validation loss", "Checkpoint", "Saved"], checkpointList.data.map((c) => [
        c.step_number, c.metrics.train_loss === undefined ? "—" : loss(c.metrics.train_loss),
        c.metrics.valid_loss === undefined ? "—" : loss(c.metrics.valid_loss),
        h("code", {}, c.fine_tuned_model_checkpoint), when(c.created_at),
      ]), { empty: "No checkpoints yet: the job saves one every few steps and after the last." }));
      drawEvents();
      settled = FINISHED.has(job.status);
    },
  };

  function drawProgress(curves, job) {
    const step = curves.train.at(-1)?.[0] ?? 0;
    if (!curves.totalSteps) {
      fill(progress, FINISHED.has(job.status) ? null : h("p", { class: "muted" }, "Waiting for the first training step."));
      return;
    }
    fill(progress, h("div", { class: "progress-line" },
      h("progress", { max: curves.totalSteps, value: step, "aria-label": "training steps done" }),
      h("span", { id: "job-step" }, `step ${step} of ${curves.totalSteps}`)));
  }

  function drawLoss(curves) {
    const series = [{ label: "train loss", points: curves.train }];
    if (curves.validation.length) series.push({ label: "validation loss", points: curves.validation });
    fill(legend, series.map((s, index) => {
      const value = latest(s.points);
      return h("span", { class: `legend-item series-${index}` }, h("span", { class: "swatch" }),
        `${s.label} ${value === null ? "—" : loss(value)}`);
    }));
    if (!curves.train.length) {
      fill(chart, h("div", { class: "chart-empty muted" }, lastJob && FINISHED.has(lastJob.status)
        ? "This job recorded no training steps." : "The curve starts with the job's first training step."));
      return;
    }
    const first = Math.min(curves.train[0][0], curves.validation[0]?.[0] ?? Infinity);
    const last = Math.max(curves.totalSteps || 0, curves.train.at(-1)[0], curves.validation.at(-1)?.[0] ?? 0);
    const width = Math.floor(chart.clientWidth) || 600;
    fill(chart, lineChart({ start: first, end: Math.max(last, first + 1), width, height: CHART_HEIGHT, series, format: loss,
      label: "training and validation loss by step", xLabel: (x) => `step ${Math.round(x)}` }));
  }

  return page;
}

/** Train and validation loss as [step, value] points in step order, and the job's total steps. */
export function lossCurves(events, checkpoints) {
  const train = new Map();
  const validation = new Map();
  let totalSteps = null;
  // Oldest first, so a step repeated after a resume keeps its latest value.
  for (const event of [...events].reverse()) {
    const data = event.data || {};
    if (Number.isFinite(data.total_steps)) totalSteps = data.total_steps;
    if (!Number.isFinite(data.step)) continue;
    if (event.type === "metrics" && Number.isFinite(data.train_loss)) train.set(data.step, data.train_loss);
    const valid = data.valid_loss ?? data.full_valid_loss ?? data.metrics?.valid_loss;
    if (Number.isFinite(valid)) validation.set(data.step, valid);
  }
  for (const checkpoint of checkpoints) {
    const metrics = checkpoint.metrics || {};
    const step = checkpoint.step_number ?? metrics.step;
    if (Number.isFinite(metrics.valid_loss) && !validation.has(step)) validation.set(step, metrics.valid_loss);
    if (Number.isFinite(metrics.train_loss) && !train.has(step)) train.set(step, metrics.train_loss);
  }
  const ordered = (map) => [...map.entries()].sort((a, b) => a[0] - b[0]);
  return { train: ordered(train), validation: ordered(validation), totalSteps };
}
