// The dashboard's shell: sign-in, the hash router (#/models, #/deployments/<id>, #/traces,
// #/traces/<id>, #/datasets, #/datasets/<id>, #/fine-tuning, #/fine-tuning/<job id>, #/evals,
// #/evals/runs/<id>, #/usage, #/keys) and the refresh loop that re-reads the current page's data
// every few seconds. A list page may carry its filter as a query (#/traces?model=bot&tag=beta).
// When a page first shows its data, a performance mark "slipway:rendered:<page>" says so (the
// browser tests read it to time the pages).

import { api, session, whenSignedOut } from "./api.js";
import { errorBox, fill, h } from "./dom.js";
import * as dataset from "./pages/dataset.js";
import * as datasets from "./pages/datasets.js";
import * as deployment from "./pages/deployment.js";
import * as evalRun from "./pages/eval-run.js";
import * as evals from "./pages/evals.js";
import * as job from "./pages/job.js";
import * as jobs from "./pages/jobs.js";
import * as keys from "./pages/keys.js";
import * as models from "./pages/models.js";
import * as trace from "./pages/trace.js";
import * as traces from "./pages/traces.js";
import * as usage from "./pages/usage.js";

const REFRESH_MS = 3000;
// [hash pattern, page module, page name, the navigation link it lights]. Ids are URI-encoded in
// the hash (a trace id is a request id, which a client may choose).
const ID = "([^/?#]+)";
const QUERY = "(?:\\?(.*))?";
const ROUTES = [
  [/^#\/models$/, models, "models", "models"],
  [/^#\/deployments\/([\w-]+)$/, deployment, "deployment", "models"],
  [new RegExp(`^#/traces${QUERY}$`), traces, "traces", "traces"],
  [new RegExp(`^#/traces/${ID}$`), trace, "trace", "traces"],
  [/^#\/datasets$/, datasets, "datasets", "datasets"],
  [new RegExp(`^#/datasets/${ID}$`), dataset, "dataset", "datasets"],
  [/^#\/fine-tuning$/, jobs, "fine-tuning", "fine-tuning"],
  [new RegExp(`^#/fine-tuning/${ID}$`), job, "fine-tuning-job", "fine-tuning"],
  [new RegExp(`^#/evals${QUERY}$`), evals, "evals", "evals"],
  [new RegExp(`^#/evals/runs/${ID}$`), evalRun, "eval-run", "evals"],
  [/^#\/usage$/, usage, "usage", "usage"],
  [/^#\/keys$/, keys, "keys", "keys"],
];

const main = document.getElementById("main");
const topbar = document.getElementById("topbar");
let current = null; // {page, name, status, timer, busy, rendered}
let principal = null;

function stopPage() {
  if (current) clearInterval(current.timer);
  current = null;
}

async function refresh(state) {
  if (state.busy || state !== current) return;
  state.busy = true;
  try {
    await state.page.refresh();
    state.status.replaceChildren();
    if (!state.rendered && state === current) {
      state.rendered = true;
      performance.mark(`slipway:rendered:${state.name}`);
    }
  } catch (error) {
    if (state === current) fill(state.status, errorBox(error));
  } finally {
    state.busy = false;
  }
}

function route() {
  if (!principal) return;
  const [pattern, module, name, nav] = ROUTES.find(([re]) => re.test(location.hash)) || [];
  if (!module) {
    location.replace("#/models");
    return;
  }
  stopPage();
  const params = location.hash.match(pattern).slice(1);
  const status = h("div", { class: "status" });
  const body = h("div", {});
  fill(main, status, body);
  for (const link of topbar.querySelectorAll("[data-page]")) {
    link.classList.toggle("active", link.dataset.page === nav);
  }
  const state = { page: module.mount(body, params, { principal }), name, status, busy: false, rendered: false };
  current = state;
  state.timer = setInterval(() => refresh(state), REFRESH_MS);
  refresh(state);
}

function showSignIn(message) {
  stopPage();
  principal = null;
  topbar.hidden = true;
  const input = h("input", { type: "password", id: "key", name: "key", autocomplete: "off",
    placeholder: "sk-slw-…", required: true, "aria-label": "API key" });
  const problem = h("div", { class: "status" }, message ? errorBox({ message }) : null);
  const form = h("form", { class: "card sign-in", id: "sign-in" },
    h("h1", {}, "Sign in to slipway"),
    h("p", { class: "muted" }, "Use an API key with the admin scope, e.g. the one in $SLIPWAY_HOME/admin.key."),
    h("label", { for: "key" }, "API key"), input, problem,
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      principal = await session.signIn(input.value);
      input.value = "";
      start();
    } catch (error) {
      fill(problem, errorBox(error));
    }
  });
  fill(main, form);
  input.focus();
}

function start() {
  topbar.hidden = false;
  fill(document.getElementById("who"), `workspace ${principal.workspace_id}`);
  if (!location.hash || location.hash === "#/" || location.hash === "#") location.replace("#/models");
  route();
}

document.getElementById("sign-out").addEventListener("click", async () => {
  try {
    await session.signOut();
  } finally {
    showSignIn();
  }
});
whenSignedOut(() => showSignIn("Your session ended; sign in again."));
window.addEventListener("hashchange", route);

const me = await api("/ui/session").catch(() => ({ signed_in: false }));
if (me.signed_in) {
  principal = me;
  start();
} else {
  showSignIn();
}
