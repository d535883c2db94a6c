// Building DOM nodes without innerHTML (every value is text, never markup), and formatting.

/** h("a", {href: "#/x", class: "link", onclick: fn}, "text", child, [more]) */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else if (name === "value") node.value = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace a node's children. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export function table(columns, rows, { empty = "Nothing here yet." } = {}) {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("div", { class: "table-wrap" },
    h("table", {},
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c)))))));
}

export function pill(status) {
  return h("span", { class: `pill pill-${String(status).replace(/[^a-z]/g, "")}` }, status);
}

export function ago(seconds) {
  if (!seconds) return "—";
  const delta = Math.max(0, Date.now() / 1000 - seconds);
  if (delta < 60) return `${Math.round(delta)}s ago`;
  if (delta < 3600) return `${Math.round(delta / 60)}m ago`;
  if (delta < 86400) return `${Math.round(delta / 3600)}h ago`;
  return `${Math.round(delta / 86400)}d ago`;
}

export function number(value, digits = 0) {
  if (value === null || value === undefined) return "—";
  return Number(value).toLocaleString("en-US", { maximumFractionDigits: digits });
}

export function errorBox(error) {
  return h("p", { class: "error", role: "alert" }, error.message || String(error));
}

/** A Unix time as "3m ago", with the exact UTC time on hover. */
export function when(seconds) {
  if (!seconds) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: new Date(seconds * 1000).toISOString(), title: new Date(seconds * 1000).toISOString() },
    ago(seconds));
}

/** A duration in milliseconds, e.g. "84 ms" or "1.2 s". */
export function millis(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${Number(ms.toFixed(ms < 10 ? 1 : 0))} ms`;
  return `${Number((ms / 1000).toFixed(ms < 10_000 ? 2 : 1))} s`;
}

/** A label and its value for a `<dl class="facts">`. */
export function fact(label, value, attrs = {}) {
  return h("div", attrs, h("dt", {}, label), h("dd", {}, value ?? h("span", { class: "muted" }, "—")));
}

/** What to do when there is nothing to show: lines of text, and commands given as {command}. */
export function emptyHelp(...lines) {
  return h("div", { class: "empty" },
    lines.map((line) => (line && line.command ? h("pre", {}, h("code", {}, line.command)) : h("p", {}, line))));
}

/** The same as a card of its own, under a title. */
export function emptyCard(title, ...lines) {
  const help = emptyHelp(...lines);
  help.classList.add("card");
  help.prepend(h("h2", {}, title));
  return help;
}

/** Two-step confirmation on a button: the first click arms it (text `confirmText`), the second runs `action`. */
export function confirmButton(button, confirmText, action) {
  const text = button.textContent;
  let armed = false;
  button.addEventListener("click", async () => {
    if (!armed) {
      armed = true;
      button.textContent = confirmText;
      return;
    }
    armed = false;
    button.disabled = true;
    try {
      await action();
    } finally {
      button.disabled = false;
      button.textContent = text;
    }
  });
  return button;
}
