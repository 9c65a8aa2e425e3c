// The charts page: per-model requests, latency and time to first token (p50 solid, p95
// dashed) and tokens/s per minute, from /garden/series; backend health and breaker states
// from /garden/backends. Refreshed every 10 seconds while the page is shown.

import { json } from "./api.js";
import { COLORS, lineChart } from "./chart.js";
import { h, toast } from "./dom.js";

const REFRESH_MS = 10000;
const CHARTS = [
  { id: "requests", title: "Requests per minute", fields: ["requests"], unit: "", fill: true },
  {
    id: "latency",
    title: "Latency (ms), p50 and p95",
    fields: ["latency_p50_ms", "latency_p95_ms"],
    unit: " ms",
  },
  {
    id: "ttft",
    title: "Time to first token (ms), p50 and p95",
    fields: ["ttft_p50_ms", "ttft_p95_ms"],
    unit: " ms",
  },
  { id: "rate", title: "Tokens per second", fields: ["tokens_per_s"], unit: " tokens/s" },
];

let timer = 0;
const minutes = document.getElementById("charts-minutes");

export function show() {
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
}

export function hide() {
  clearInterval(timer);
  timer = 0;
}

function label(model) {
  return model || "(unknown model)";
}

/** One chart's series: a line per model and field (the second field dashed). */
function seriesFor(chart, data) {
  const out = [];
  data.models.forEach((m, i) => {
    chart.fields.forEach((field, k) => {
      let points = m.points.filter((p) => p[field] !== null).map((p) => ({ t: p.t, v: p[field] }));
      if (chart.fill) points = zeroFilled(points, data);
      out.push({
        name: `${label(m.model)}${chart.fields.length > 1 ? (k ? " p95" : " p50") : ""}`,
        color: COLORS[i % COLORS.length],
        dashed: k > 0,
        points,
      });
    });
  });
  return out;
}

/** A count per minute with the idle minutes as zeros (drawn without a dot). */
function zeroFilled(points, data) {
  const at = new Map(points.map((p) => [p.t, p.v]));
  const out = [];
  for (let t = data.start; t < data.end; t += data.step) {
    out.push(at.has(t) ? { t, v: at.get(t) } : { t, v: 0, quiet: true });
  }
  return out;
}

function legend(chart, data) {
  return h(
    "div",
    { class: "legend" },
    chart.fields.length > 1 && h("span", { class: "muted" }, "solid: p50, dashed: p95"),
    data.models.map((m, i) =>
      h("span", {}, h("i", { style: `background:${COLORS[i % COLORS.length]}` }), label(m.model)),
    ),
  );
}

async function refresh() {
  let data, backends;
  try {
    [data, backends] = await Promise.all([
      json(`/garden/series?minutes=${minutes.value}`),
      json("/garden/backends"),
    ]);
  } catch (err) {
    toast(err.message, true);
    return;
  }
  const box = document.getElementById("charts");
  box.replaceChildren(
    ...CHARTS.map((chart) => {
      const plot = h("div", { class: "plot" });
      const series = seriesFor(chart, data);
      lineChart(plot, { series, start: data.start, end: data.end, unit: chart.unit });
      return h("div", { class: "chart", id: `chart-${chart.id}` }, h("h3", {}, chart.title), plot, legend(chart, data));
    }),
  );
  renderBackends(backends.backends);
  document.getElementById("charts-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

function renderBackends(list) {
  const cards = list.map((b) =>
    h(
      "div",
      { class: "card backend", dataset: { name: b.name } },
      h(
        "h3",
        {},
        `${b.name} `,
        h("span", { class: `badge ${b.up ? "on" : "bad"}` }, b.up ? "up" : "down"),
        h("span", { class: "badge" }, b.kind),
      ),
      h(
        "dl",
        {},
        h("dt", {}, "In flight"),
        h("dd", {}, String(b.active)),
        h("dt", {}, "Waiting"),
        h("dd", {}, String(b.waiting)),
        h("dt", {}, "Turned away"),
        h("dd", {}, String(b.rejected)),
        b.loaded !== undefined && [h("dt", {}, "Loaded models"), h("dd", {}, String(b.loaded))],
      ),
      (b.replicas || []).map((r) =>
        h(
          "div",
          { class: "replica" },
          h("span", { class: `badge ${r.breaker === "closed" ? "on" : "bad"}` }, `breaker ${r.breaker}`),
          h("span", { class: `badge ${r.healthy === false ? "bad" : ""}` }, r.healthy === false ? "unhealthy" : "healthy"),
          h("span", { class: "muted" }, r.url),
        ),
      ),
    ),
  );
  document.getElementById("backends").replaceChildren(...cards);
}

minutes.addEventListener("change", refresh);
document.getElementById("charts-refresh").addEventListener("click", refresh);
