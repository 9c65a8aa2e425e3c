// A line chart in plain SVG: time on x, one or more series on y, a dot per data point
// (with its value as a tooltip). No library: a console must work offline.

const NS = "http://www.w3.org/2000/svg";
const W = 480;
const H = 200;
const PAD = { left: 44, right: 10, top: 10, bottom: 24 };
export const COLORS = ["#2f7d4f", "#3b6fd1", "#c2602b", "#8a4fbf", "#b8327a", "#2f8f9a", "#7a7a2a"];

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** A "nice" upper bound for the y axis: 1, 2 or 5 times a power of ten. */
function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * power).find((m) => m >= value);
}

function clock(t) {
  const d = new Date(t * 1000);
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

function format(value) {
  if (Number.isInteger(value)) return String(value);
  if (value >= 100) return value.toFixed(0);
  if (value >= 10) return value.toFixed(1);
  return Number(value.toFixed(2)).toString();
}

/**
 * Draw into `box` (replacing what was there). `series`: [{name, color, dashed, points:
 * [{t, v, quiet}]}] (a quiet point gets no dot); `start`/`end`: the x range in Unix seconds; `unit`: shown in tooltips.
 */
export function lineChart(box, { series, start, end, unit = "" }) {
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  const values = series.flatMap((s) => s.points.filter((p) => !p.quiet).map((p) => p.v));
  const top = niceMax(Math.max(0, ...values));
  const x = (t) => PAD.left + ((t - start) / Math.max(end - start, 1)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
  for (const f of [0, 0.5, 1]) {
    const v = top * f;
    root.append(svg("line", { class: "axis", x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }));
    root.append(svg("text", { x: PAD.left - 4, y: y(v) + 4, "text-anchor": "end" }, format(v)));
  }
  const step = end - start > 1800 ? 900 : 300;
  for (let t = Math.ceil(start / step) * step; t <= end; t += step) {
    root.append(svg("text", { x: x(t), y: H - 6, "text-anchor": "middle" }, clock(t)));
  }
  for (const s of series) {
    if (!s.points.length) continue;
    const path = s.points.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`);
    root.append(
      svg("path", {
        d: path.join(" "),
        fill: "none",
        stroke: s.color,
        "stroke-width": 2,
        "stroke-dasharray": s.dashed ? "5 4" : "none",
      }),
    );
    for (const p of s.points) {
      if (p.quiet) continue; // a filled-in idle minute
      const dot = svg("circle", { class: "point", cx: x(p.t), cy: y(p.v), r: 3, fill: s.color });
      dot.append(svg("title", {}, `${s.name} at ${clock(p.t)}: ${format(p.v)}${unit}`));
      root.append(dot);
    }
  }
  if (!values.length) {
    root.append(
      svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, "no traffic yet"),
    );
  }
  box.replaceChildren(root);
}
