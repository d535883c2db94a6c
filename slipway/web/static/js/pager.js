// Paging through a list the API pages with a cursor (`after`: continue past this row). The pager
// keeps the cursor of every page seen so far, so going back lands on exactly the rows shown
// before, and each refresh re-reads the page on screen.
//
//   const pages = pager({ back: "Newer", forward: "Older", onChange: refresh });
//   fetch with pages.after ... then pages.update(hasMore, cursorOfTheLastRow)

import { errorBox, fill, h } from "./dom.js";

export function pager({ back = "Newer", forward = "Older", onChange, id = "pager" }) {
  const cursors = [null];
  const backButton = h("button", { type: "button", class: "plain small", "data-pager": "back" }, `← ${back}`);
  const forwardButton = h("button", { type: "button", class: "plain small", "data-pager": "forward" }, `${forward} →`);
  const where = h("span", { class: "muted" });
  const problem = h("div", { class: "status" });
  const node = h("div", { class: "pager", id }, backButton, where, forwardButton, problem);
  let next = null;

  async function turn() {
    problem.replaceChildren();
    try {
      await onChange();
    } catch (error) {
      fill(problem, errorBox(error));
    }
  }
  backButton.addEventListener("click", () => {
    if (cursors.length > 1) cursors.pop();
    turn();
  });
  forwardButton.addEventListener("click", () => {
    if (next === null) return;
    cursors.push(next);
    turn();
  });

  return {
    node,
    /** The cursor of the page on screen (null for the first page). */
    get after() {
      return cursors[cursors.length - 1];
    },
    /** The 0-based number of the page on screen. */
    get index() {
      return cursors.length - 1;
    },
    /** Back to the first page (e.g. when a filter changes); the caller reads it again. */
    reset() {
      cursors.length = 1;
      next = null;
    },
    /** After a fetch: whether rows follow, and the cursor that continues past the last row shown. */
    update(hasMore, lastCursor) {
      next = hasMore && lastCursor !== undefined && lastCursor !== null ? lastCursor : null;
      backButton.disabled = cursors.length === 1;
      forwardButton.disabled = next === null;
      where.textContent = `page ${cursors.length}`;
      node.hidden = cursors.length === 1 && next === null;
    },
  };
}
