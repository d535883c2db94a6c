// Requests and answers as people read them: a chat as a conversation (role, then text), a
// completion prompt or embedding input as text, an answer's choices as messages, and anything else
// as indented JSON. The raw JSON is always one click away.
//
//   conversation(messages)          the messages of a chat, one block each
//   requestView(request)            a captured request body (chat, completion, embedding, predict)
//   responseView(response, status)  a captured answer (a completion, streamed or not; an error; JSON)
//   answerText(response)            the answer's text, or "" (to start a corrected output from)
//   rawJson(summary, value)         a folded <details> with the value's JSON

import { h } from "./dom.js";

// Request fields shown as settings beside the conversation (the rest is in the raw JSON).
const SETTINGS = ["temperature", "top_p", "max_tokens", "max_completion_tokens", "n", "seed", "stop", "stream"];
const TRUNCATED_KEY = "slipway_truncated";

/** The text of an OpenAI message `content`: a string, or the text of its parts. */
export function contentText(content) {
  if (content === null || content === undefined) return "";
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map((part) => (typeof part === "string" ? part : part?.text ?? `[${part?.type || "part"}]`)).join("\n");
  }
  return JSON.stringify(content, null, 2);
}

function message(role, text, extra) {
  return h("div", { class: `chat-message role-${String(role).replace(/[^a-z]/g, "")}` },
    h("div", { class: "role" }, role), h("div", { class: "text" }, text || h("span", { class: "muted" }, "(empty)")),
    extra || null);
}

export function conversation(messages) {
  return h("div", { class: "messages" }, messages.map((m) => {
    const calls = m?.tool_calls || m?.tool_call_deltas;
    return message(m?.role || "?", contentText(m?.content),
      calls ? h("pre", { class: "json" }, JSON.stringify(calls, null, 2)) : null);
  }));
}

function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

function textBlock(label, value) {
  const text = Array.isArray(value) ? value.map((v) => (typeof v === "string" ? v : JSON.stringify(v))).join("\n—\n")
    : typeof value === "string" ? value : JSON.stringify(value, null, 2);
  return h("div", { class: "messages" }, message(label, text));
}

function truncatedNote(value) {
  const cut = value?.[TRUNCATED_KEY];
  if (!cut) return null;
  const sizes = typeof cut === "object" ? ` (${cut.kept_bytes} of ${cut.bytes} bytes kept)` : "";
  return h("p", { class: "note muted" }, `The body was cut at the capture limit${sizes}.`);
}

export function requestView(request) {
  if (!request || typeof request !== "object") return h("p", { class: "muted" }, "No request recorded.");
  let body;
  if (Array.isArray(request.messages)) body = conversation(request.messages);
  else if (request.prompt !== undefined) body = textBlock("prompt", request.prompt);
  else if (request.input !== undefined) body = textBlock("input", request.input);
  else if (typeof request.text === "string") body = textBlock("text", request.text);
  else body = json(request);
  const settings = SETTINGS.filter((key) => request[key] !== undefined && request[key] !== null);
  return h("div", {}, truncatedNote(request), body,
    settings.length ? h("p", { class: "settings muted" },
      settings.map((key) => h("span", {}, `${key} ${JSON.stringify(request[key])}`))) : null);
}

function choiceView(choice) {
  const finish = choice.finish_reason ? h("small", { class: "muted" }, `finish reason: ${choice.finish_reason}`) : null;
  if (choice.message) {
    const calls = choice.message.tool_calls || choice.message.tool_call_deltas;
    return message(choice.message.role || "assistant", contentText(choice.message.content),
      [calls ? h("pre", { class: "json" }, JSON.stringify(calls, null, 2)) : null, finish]);
  }
  return message("completion", choice.text ?? "", finish);
}

export function responseView(response, statusCode) {
  if (!response || typeof response !== "object" || !Object.keys(response).length) {
    return h("p", { class: "muted" }, statusCode >= 400 ? `No body recorded (status ${statusCode}).` : "No answer recorded.");
  }
  const parts = [truncatedNote(response)];
  if (response.error) {
    const text = typeof response.error === "object" ? response.error.message || JSON.stringify(response.error) : response.error;
    parts.push(h("p", { class: "error" }, text));
  }
  if (Array.isArray(response.choices)) {
    parts.push(h("div", { class: "messages" }, response.choices.map(choiceView)));
  } else if (Array.isArray(response.data) && response.data.every((d) => Array.isArray(d?.embedding))) {
    const size = response.data[0]?.embedding.length ?? 0;
    parts.push(h("p", {}, `${response.data.length} embedding(s) of ${size} dimensions.`));
  } else if (typeof response.text === "string") {
    parts.push(textBlock("text", response.text));
  } else if (!response.error) {
    parts.push(json(response));
  }
  if (response.stream) parts.push(h("small", { class: "muted" }, "Streamed; the chunks are joined here."));
  return h("div", {}, parts);
}

export function answerText(response) {
  const choice = response?.choices?.[0];
  if (!choice) return typeof response?.text === "string" ? response.text : "";
  return choice.message ? contentText(choice.message.content) : choice.text ?? "";
}

export function rawJson(summary, value) {
  return h("details", { class: "raw" }, h("summary", {}, summary), json(value));
}
