// The dashboard's shell: sign-in, the hash router (#/models, #/deployments/<id>, #/usage,
// #/keys) and the refresh loop that re-reads the current page's data every few seconds.
// When a page first shows its data, a performance mark "slipway:rendered:<page>" says so (the
// browser tests read it to time the pages).

import { api, session, whenSignedOut } from "./api.js";
import { errorBox, fill, h } from "./dom.js";
import * as deployment from "./pages/deployment.js";
import * as keys from "./pages/keys.js";
import * as models from "./pages/models.js";
import * as usage from "./pages/usage.js";

const REFRESH_MS = 3000;
// [hash pattern, page module, page name, the navigation link it lights]
const ROUTES = [
  [/^#\/models$/, models, "models", "models"],
  [/^#\/deployments\/([\w-]+)$/, deployment, "deployment", "models"],
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
