// The playground: a streamed chat through /api/chat with a system prompt, temperature, max
// tokens and an optional JSON schema. Each answer shows its time to first token (measured
// here, from sending to the first text), tokens/s and token counts (from the final record).
// Stop aborts the request; the gateway sees its client leave and cancels the generation.

import { api, json, ndjson } from "./api.js";
import { h, toast } from "./dom.js";

const form = document.getElementById("chat-form");
const input = document.getElementById("chat-input");
const select = document.getElementById("chat-model");
const transcript = document.getElementById("transcript");
const sendButton = document.getElementById("chat-send");
const stopButton = document.getElementById("chat-stop");

let history = [];
let controller = null;

export function show() {
  loadModels();
}

export function hide() {}

async function loadModels() {
  let data;
  try {
    data = await json("/garden/models");
  } catch (err) {
    toast(err.message, true);
    return;
  }
  const wanted = select.value || data.default_model;
  const chat = data.models.filter((m) => !m.capabilities || m.capabilities.includes("completion"));
  select.replaceChildren(...chat.map((m) => h("option", { value: m.name }, m.name)));
  const found = chat.find((m) => m.name === wanted || m.model === wanted);
  if (found) select.value = found.name;
}

/** The `format` field from the schema box: undefined, "json", or a parsed schema. */
function format() {
  const text = document.getElementById("chat-schema").value.trim();
  if (!text) return undefined;
  if (text === "json" || text === '"json"') return "json";
  return JSON.parse(text); // a SyntaxError is shown to the user
}

function options() {
  const out = {};
  const temperature = document.getElementById("chat-temperature").value;
  const maxTokens = document.getElementById("chat-max-tokens").value;
  if (temperature !== "") out.temperature = Number(temperature);
  if (maxTokens !== "") out.num_predict = Number(maxTokens);
  return out;
}

function bubble(role, text) {
  const content = h("div", { class: "content" }, text);
  const stats = h("div", { class: "stats" });
  const el = h("div", { class: `msg ${role}` }, content, role === "assistant" && stats);
  transcript.append(el);
  el.scrollIntoView({ block: "end" });
  return { el, content, stats };
}

function describe(stats, ttft, final) {
  const parts = [];
  if (ttft !== null) {
    stats.dataset.ttftMs = ttft.toFixed(0);
    parts.push(`first token ${ttft.toFixed(0)} ms`);
  }
  if (final && final.eval_count !== undefined) {
    const rate = final.eval_duration ? final.eval_count / (final.eval_duration / 1e9) : null;
    if (rate !== null) {
      stats.dataset.tokensPerS = rate.toFixed(1);
      parts.push(`${rate.toFixed(1)} tokens/s`);
    }
    stats.dataset.promptTokens = final.prompt_eval_count ?? 0;
    stats.dataset.completionTokens = final.eval_count;
    parts.push(`${final.prompt_eval_count ?? 0} prompt + ${final.eval_count} completion tokens`);
  }
  if (final && final.total_duration) parts.push(`${(final.total_duration / 1e9).toFixed(2)} s`);
  return parts.join(" · ");
}

async function send(event) {
  event.preventDefault();
  const text = input.value.trim();
  if (!text || controller) return;
  let body;
  try {
    body = { model: select.value, stream: true, options: options(), format: format() };
  } catch (err) {
    toast(`JSON schema: ${err.message}`, true);
    return;
  }
  const system = document.getElementById("chat-system").value.trim();
  const user = { role: "user", content: text };
  body.messages = [...(system ? [{ role: "system", content: system }] : []), ...history, user];
  input.value = "";
  bubble("user", text);
  const answer = bubble("assistant", "");
  answer.el.classList.add("streaming");
  controller = new AbortController();
  setBusy(true);
  const start = performance.now();
  let ttft = null;
  let final = null;
  let content = "";
  try {
    const res = await api("/api/chat", { method: "POST", body, signal: controller.signal });
    for await (const record of ndjson(res)) {
      const piece = record.message?.content || "";
      if (piece) {
        if (ttft === null) ttft = performance.now() - start;
        content += piece;
        answer.content.textContent = content;
      }
      if (record.done) final = record;
    }
    answer.stats.textContent = describe(answer.stats, ttft, final);
  } catch (err) {
    if (err.name === "AbortError") {
      const head = describe(answer.stats, ttft, null);
      answer.stats.textContent = `stopped${head ? ` · ${head}` : ""}`;
      answer.el.classList.add("stopped");
    } else {
      answer.el.classList.add("error");
      answer.content.textContent = content ? `${content}\n\n${err.message}` : err.message;
    }
  } finally {
    if (content) history.push(user, { role: "assistant", content });
    answer.el.classList.remove("streaming");
    answer.el.classList.add("done");
    controller = null;
    setBusy(false);
  }
}

function setBusy(busy) {
  sendButton.disabled = busy;
  stopButton.disabled = !busy;
}

form.addEventListener("submit", send);
stopButton.addEventListener("click", () => controller?.abort());
document.getElementById("chat-clear").addEventListener("click", () => {
  controller?.abort();
  history = [];
  transcript.replaceChildren();
});
input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});
