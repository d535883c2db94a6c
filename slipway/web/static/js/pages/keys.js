// API keys: list, create and revoke, each confirmed first. A new key's secret is shown once, until
// the visitor says it is copied or leaves the page; the server never shows it again.

import { api } from "../api.js";
import { ago, errorBox, fill, h, table } from "../dom.js";

const SCOPES = ["admin", "invoke", "metrics"];

export function mount(root, _params, { principal }) {
  const list = h("div", {});
  const created = h("div", { class: "status", id: "key-created" });
  const name = h("input", { id: "key-name", name: "name", maxlength: 200, placeholder: "e.g. staging app" });
  const scopeBoxes = SCOPES.map((scope) => h("input", { type: "checkbox", name: "scope", value: scope,
    id: `scope-${scope}`, checked: scope === "invoke" }));
  const form = h("form", { class: "card form-grid", id: "create-key" },
    h("h2", { class: "span-all" }, "Create a key"),
    h("div", {}, h("label", { for: "key-name" }, "Name"), name),
    h("fieldset", {}, h("legend", {}, "Scopes"),
      scopeBoxes.map((box) => h("label", { class: "check", for: box.id }, box, box.value))),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Create key…")),
    h("div", { class: "span-all" }, created));
  // Armed revoke buttons survive the periodic re-render, so the confirming click still counts.
  const page = {
    armed: new Set(),
    async refresh() {
      const keys = (await api("/api/v1/keys")).data;
      const rows = keys.map((key) => [
        key.name || h("span", { class: "muted" }, "(unnamed)"),
        h("code", {}, `${key.prefix}…`),
        key.scopes.join(", "),
        ago(key.created_at),
        key.revoked_at ? h("span", { class: "pill pill-inactive" }, "revoked") : h("span", { class: "pill pill-active" }, "active"),
        key.revoked_at ? "" : key.id === principal.key_id ? h("span", { class: "muted" }, "this session")
          : revokeButton(key, page),
      ]);
      fill(list, table(["Name", "Key", "Scopes", "Created", "State", ""], rows));
    },
  };

  async function create(request) {
    try {
      const key = await api("/api/v1/keys", { method: "POST", body: request });
      name.value = "";
      const done = h("button", { type: "button", class: "small", id: "secret-copied" }, "I have copied it");
      done.addEventListener("click", () => created.replaceChildren());
      fill(created, h("div", { class: "secret", role: "status" },
        h("p", {}, h("strong", {}, `Key “${key.name || key.prefix}” created.`), " Copy it now: it is not shown again."),
        h("code", { id: "new-secret" }, key.key), done));
      await page.refresh();
    } catch (error) {
      fill(created, errorBox(error));
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const request = { name: name.value.trim(), scopes: scopeBoxes.filter((b) => b.checked).map((b) => b.value) };
    if (!request.scopes.length) {
      fill(created, errorBox({ message: "Pick at least one scope: invoke calls models, admin manages this workspace, metrics reads usage." }));
      return;
    }
    const confirm = h("button", { type: "button", id: "confirm-create" }, "Create it");
    const cancel = h("button", { type: "button", class: "plain" }, "Cancel");
    confirm.addEventListener("click", () => {
      confirm.disabled = cancel.disabled = true;
      create(request);
    });
    cancel.addEventListener("click", () => created.replaceChildren());
    const powers = request.scopes.includes("admin") ? " An admin key can manage everything in this workspace, keys included." : "";
    fill(created, h("div", { class: "confirm", role: "alertdialog", "aria-label": "Confirm the new key" },
      h("p", {}, `Create a key${request.name ? ` named “${request.name}”` : ""} with scopes ${request.scopes.join(", ")}?${powers}`),
      h("div", { class: "buttons" }, confirm, cancel)));
    confirm.focus();
  });

  fill(root, h("div", { class: "page-head" }, h("h1", {}, "API keys")), form,
    h("section", { class: "card" }, h("h2", {}, "Keys"), list));
  return page;
}

function revokeButton(key, page) {
  const button = h("button", { type: "button", class: "danger small", "data-revoke": key.id }, "Revoke");
  if (page.armed.has(key.id)) button.textContent = "Confirm revoke";
  button.addEventListener("click", async () => {
    if (!page.armed.has(key.id)) {
      page.armed.add(key.id);
      button.textContent = "Confirm revoke";
      return;
    }
    page.armed.delete(key.id);
    button.disabled = true;
    try {
      await api(`/api/v1/keys/${key.id}`, { method: "DELETE" });
      await page.refresh();
    } catch (error) {
      button.replaceWith(errorBox(error));
    }
  });
  return button;
}
