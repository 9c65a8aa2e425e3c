// The models page: installed models (/garden/models), loaded ones (/api/ps) with a live
// countdown to their unloading, and the actions: load, pin, unload (/api/generate with a
// keep_alive), copy (/api/copy), delete (/api/delete, confirmed) and pull (/api/pull, with
// per-layer progress from its NDJSON stream).

import { api, ApiError, json, ndjson } from "./api.js";
import { bytes, confirmAction, duration, h, toast } from "./dom.js";

/** expires_at further away than this means "never" (a pinned model). */
const PINNED_AFTER_S = 100 * 365 * 24 * 3600;
const LOADABLE = new Set(["local", "ollama", "modal"]);

let timers = [];
let loadedNames = new Set();
let pulling = null;

export function show() {
  refresh();
  timers = [setInterval(tick, 1000), setInterval(refreshLoaded, 5000)];
}

export function hide() {
  timers.forEach(clearInterval);
  timers = [];
}

/** Reload both lists. */
export async function refresh() {
  await Promise.all([refreshLoaded(), refreshInstalled()]);
}

function failed(where, err) {
  where.replaceChildren(h("p", { class: "muted" }, `Cannot load: ${err.message}`));
}

async function refreshInstalled() {
  const where = document.getElementById("installed");
  let data;
  try {
    data = await json("/garden/models");
  } catch (err) {
    return failed(where, err);
  }
  const m = data.memory;
  document.getElementById("memory").textContent =
    `Memory for models: ${bytes(m.for_models)} (RAM ${bytes(m.ram_available)} free of ` +
    `${bytes(m.ram_total)})`;
  if (!data.models.length) {
    where.replaceChildren(h("p", { class: "muted" }, "No models installed. Pull one below."));
    return;
  }
  where.replaceChildren(...data.models.map((model) => installedCard(model, data.default_model)));
}

function installedCard(m, defaultModel) {
  const d = m.details || {};
  const isDefault = defaultModel && (m.name === defaultModel || m.model === defaultModel);
  const isLoaded = loadedNames.has(m.name);
  const local = m.kind === "local";
  return h(
    "div",
    { class: "card model", dataset: { name: m.name } },
    h(
      "h3",
      {},
      m.name,
      " ",
      isDefault && h("span", { class: "badge on" }, "default"),
      isLoaded && h("span", { class: "badge on" }, "loaded"),
    ),
    h(
      "dl",
      {},
      row("Size", bytes(m.size), "size"),
      row("Family", d.family || "–", "family"),
      row("Parameters", d.parameter_size || "–", "parameters"),
      row("Quantization", d.quantization_level || "–", "quantization"),
      row("Memory (est.)", m.memory ? bytes(m.memory) : "–", "memory"),
      m.context_length && row("Context", `${m.context_length} tokens`, "context"),
      row("Backend", m.backend, "backend"),
    ),
    h(
      "div",
      { class: "caps" },
      (m.capabilities || []).map((c) => h("span", { class: "badge" }, c)),
    ),
    h(
      "div",
      { class: "actions" },
      LOADABLE.has(m.kind) && [
        button("Load", () => keepAlive(m.name, undefined, "Loaded")),
        button("Pin", () => keepAlive(m.name, -1, "Pinned")),
        isLoaded && button("Unload", () => keepAlive(m.name, 0, "Unloaded")),
      ],
      local && button("Copy", () => copy(m.name)),
      local && button("Delete", () => remove(m.name), "danger"),
    ),
  );
}

function row(term, value, key) {
  return [h("dt", {}, term), h("dd", { dataset: { field: key } }, value)];
}

function button(label, action, cls = "quiet") {
  return h("button", {
    type: "button",
    class: cls,
    onclick: async (event) => {
      const el = event.currentTarget;
      el.disabled = true;
      try {
        await action();
      } catch (err) {
        toast(err.message, true);
      } finally {
        el.disabled = false;
      }
    },
  }, label);
}

async function refreshLoaded() {
  const where = document.getElementById("loaded");
  let data;
  try {
    data = await json("/api/ps");
  } catch (err) {
    return failed(where, err);
  }
  const names = new Set(data.models.map((m) => m.name));
  const changed = names.size !== loadedNames.size || [...names].some((n) => !loadedNames.has(n));
  loadedNames = names;
  if (!data.models.length) {
    where.replaceChildren(h("p", { class: "muted" }, "No model is loaded."));
  } else {
    where.replaceChildren(...data.models.map(loadedCard));
    tick();
  }
  if (changed) refreshInstalled(); // the "loaded" badges and Unload buttons follow
}

function loadedCard(m) {
  const expires = Date.parse(m.expires_at);
  const pinned = expires / 1000 - Date.now() / 1000 > PINNED_AFTER_S;
  return h(
    "div",
    { class: "card loaded", dataset: { name: m.name } },
    h("h3", {}, m.name),
    h(
      "dl",
      {},
      row("Memory", bytes(m.size), "memory"),
      row("Context", `${m.context_length} tokens`, "context"),
      row(
        "Unloads",
        pinned
          ? "never (pinned)"
          : h("span", { class: "countdown", dataset: { expires: String(expires) } }),
        "expires",
      ),
    ),
    h("div", { class: "actions" }, button("Unload", () => keepAlive(m.name, 0, "Unloaded"))),
  );
}

/** Count each loaded model's time left down, once a second. */
function tick() {
  for (const el of document.querySelectorAll("#loaded .countdown")) {
    const left = (Number(el.dataset.expires) - Date.now()) / 1000;
    el.textContent = left > 0 ? `in ${duration(left)}` : "now";
  }
}

async function keepAlive(name, keepAlive, done) {
  const body = { model: name, stream: false };
  if (keepAlive !== undefined) body.keep_alive = keepAlive;
  toast(`${done.replace(/ed$/, "ing")} ${name}…`);
  await api("/api/generate", { method: "POST", body });
  toast(`${done} ${name}`);
  await refreshLoaded();
}

async function copy(source) {
  const dialog = document.getElementById("copy-dialog");
  const input = document.getElementById("copy-destination");
  document.getElementById("copy-source").textContent = source;
  input.value = `${source.split(":")[0]}-copy:latest`;
  const ok = await new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    input.select();
  });
  const destination = input.value.trim();
  if (!ok || !destination) return;
  await api("/api/copy", { method: "POST", body: { source, destination } });
  toast(`Copied ${source} to ${destination}`);
  await refreshInstalled();
}

async function remove(name) {
  const sure = await confirmAction(
    `Delete ${name}? Its files are removed unless another model uses them.`,
  );
  if (!sure) return;
  await api("/api/delete", { method: "DELETE", body: { model: name } });
  toast(`Deleted ${name}`);
  await refresh();
}

// -- pull ---------------------------------------------------------------------------------

function layerRow(record) {
  const bar = h("progress", { max: record.total, value: 0 });
  const pct = h("span", {}, "0%");
  const el = h(
    "div",
    { class: "layer", dataset: { digest: record.digest } },
    h("span", {}, record.digest.slice(7, 19)),
    bar,
    pct,
  );
  return { el, bar, pct, total: record.total, completed: 0 };
}

async function pull(event) {
  event.preventDefault();
  const name = document.getElementById("pull-name").value.trim();
  const insecure = document.getElementById("pull-insecure").checked;
  if (!name || pulling) return;
  const status = document.getElementById("pull-status");
  const percent = document.getElementById("pull-percent");
  const list = document.getElementById("pull-layers");
  const layers = new Map();
  pulling = new AbortController();
  setPulling(true);
  document.getElementById("pull-progress").hidden = false;
  list.replaceChildren();
  status.textContent = `${name}: pulling manifest`;
  percent.textContent = "";
  try {
    const res = await api("/api/pull", {
      method: "POST",
      body: { model: name, insecure, stream: true },
      signal: pulling.signal,
    });
    for await (const r of ndjson(res)) {
      status.textContent = `${name}: ${r.status}`;
      if (r.digest && r.total) {
        let layer = layers.get(r.digest);
        if (!layer) {
          layer = layerRow(r);
          layers.set(r.digest, layer);
          list.append(layer.el);
        }
        layer.completed = r.completed || 0;
        layer.bar.value = layer.completed;
        layer.pct.textContent = `${Math.floor((100 * layer.completed) / layer.total)}%`;
      }
      const total = [...layers.values()].reduce((s, l) => s + l.total, 0);
      const done = [...layers.values()].reduce((s, l) => s + l.completed, 0);
      if (r.status === "success") percent.textContent = "100%";
      else if (total) percent.textContent = `${Math.min(99, Math.floor((100 * done) / total))}%`;
    }
    toast(`Pulled ${name}`);
    await refreshInstalled();
  } catch (err) {
    const cancelled = err.name === "AbortError";
    status.textContent = `${name}: ${cancelled ? "cancelled (pull again to resume)" : err.message}`;
    if (!cancelled) toast(err instanceof ApiError ? err.message : String(err), true);
  } finally {
    pulling = null;
    setPulling(false);
  }
}

function setPulling(on) {
  document.getElementById("pull-start").disabled = on;
  document.getElementById("pull-cancel").hidden = !on;
}

document.getElementById("pull-form").addEventListener("submit", pull);
document.getElementById("pull-cancel").addEventListener("click", () => pulling?.abort());
