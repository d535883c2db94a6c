// Small line charts drawn as SVG by hand: time (or any other count) on x, one or more series on
// y from zero, a break in the line wherever samples are missing, and the latest value of each
// series in the legend.
//
//   lineChart({ start, end, width, height, series: [{ label, points: [[t, value], ...], steps: [...], style }],
//               format, xLabel })
//
// Values may be null (nothing measured): the line breaks there. `steps[i]` is the width in
// seconds of point i's bucket; two points further apart than twice that are not joined (a series
// without `steps` is joined throughout). A point before `start` is left out. `style` "dashed"
// draws the line dashed (e.g. a target under a value). The x axis reads as time before now
// (−30m … now) unless `xLabel(x)` writes its labels (e.g. training steps).
//
//   sparkline(values, { width, height, label })   tiny bars for a table cell, no axes

const SVG = "http://www.w3.org/2000/svg";
const HEIGHT = 150; // the default; `height` sets another
const PAD = { left: 52, right: 10, top: 10, bottom: 22 };

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

/** The smallest 1, 2, 2.5 or 5 times a power of ten at or above `value` (1 for nothing to show). */
export function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 2.5, 5, 10].map((m) => m * power).find((candidate) => candidate >= value * (1 - 1e-9));
}

/** Runs of points to draw as one line each: broken at nulls and at gaps wider than two buckets
 * (no gaps at all when `steps` is null). */
export function segments(points, steps) {
  const runs = [];
  let run = [];
  points.forEach(([t, value], i) => {
    const previous = i > 0 ? points[i - 1][0] : null;
    const gap = steps !== null && previous !== null && t - previous > 2 * Math.max(steps[i] || 0, steps[i - 1] || 0);
    if (value === null || value === undefined || gap) {
      if (run.length) runs.push(run);
      run = [];
    }
    if (value !== null && value !== undefined) run.push([t, value]);
  });
  if (run.length) runs.push(run);
  return runs;
}

function clock(seconds) {
  const minutes = seconds / 60;
  if (minutes >= 60) return `−${Number((minutes / 60).toFixed(1))}h`;
  return `−${Number(minutes.toFixed(minutes < 10 ? 1 : 0))}m`;
}

export function lineChart({ start, end, width = 600, height = HEIGHT, series, format = String, label = "",
  xLabel = null }) {
  const plotWidth = Math.max(width - PAD.left - PAD.right, 10);
  const plotHeight = height - PAD.top - PAD.bottom;
  const values = series.flatMap((s) => s.points.filter(([t]) => t >= start).map(([, v]) => v))
    .filter((v) => v !== null && v !== undefined);
  const top = niceMax(Math.max(0, ...values));
  const x = (t) => PAD.left + ((t - start) / Math.max(end - start, 1)) * plotWidth;
  const y = (v) => PAD.top + plotHeight - (v / top) * plotHeight;

  const chart = svg("svg", { class: "chart", width, height, viewBox: `0 0 ${width} ${height}`,
    role: "img", "aria-label": label });
  for (const fraction of [0, 0.5, 1]) {
    const at = y(top * fraction);
    chart.append(svg("line", { class: "grid", x1: PAD.left, x2: PAD.left + plotWidth, y1: at, y2: at }),
      svg("text", { class: "axis", x: PAD.left - 6, y: at + 4, "text-anchor": "end" }, format(top * fraction)));
  }
  const span = end - start;
  for (const [fraction, anchor] of [[0, "start"], [0.5, "middle"], [1, "end"]]) {
    const text = xLabel ? xLabel(start + span * fraction) : fraction === 1 ? "now" : clock(span * (1 - fraction));
    chart.append(svg("text", { class: "axis", x: PAD.left + plotWidth * fraction, y: height - 6, "text-anchor": anchor }, text));
  }
  series.forEach((s, index) => {
    const kept = s.points.map((point, i) => [point, s.steps?.[i]]).filter(([[t]]) => t >= start);
    const style = s.style === "dashed" ? " dashed" : "";
    const steps = s.steps ? kept.map(([, step]) => step) : null;
    for (const run of segments(kept.map(([point]) => point), steps)) {
      if (run.length === 1) {
        const [[t, v]] = run;
        chart.append(svg("circle", { class: `dot series-${index}`, cx: x(t), cy: y(v), r: 2.5 }));
        continue;
      }
      const d = run.map(([t, v], i) => `${i ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join("");
      chart.append(svg("path", { class: `line series-${index}${style}`, d }));
    }
  });
  return chart;
}

/** The latest non-null value of a series' points, or null. */
export function latest(points) {
  for (let i = points.length - 1; i >= 0; i -= 1) {
    if (points[i][1] !== null && points[i][1] !== undefined) return points[i][1];
  }
  return null;
}

/** A small bar chart of `values` (e.g. requests per 5 minutes), oldest first, for tables. */
export function sparkline(values, { width = 96, height = 22, label = "" } = {}) {
  const top = Math.max(0, ...values);
  const chart = svg("svg", { class: "sparkline", width, height, viewBox: `0 0 ${width} ${height}`,
    role: "img", "aria-label": label });
  const slot = width / Math.max(values.length, 1);
  values.forEach((value, i) => {
    const barHeight = top > 0 ? Math.max((value / top) * (height - 2), value > 0 ? 1.5 : 0) : 0;
    chart.append(svg("rect", { class: value > 0 ? "bar" : "bar idle", x: (i * slot + 1).toFixed(1),
      y: (height - 1 - barHeight).toFixed(1), width: Math.max(slot - 2, 1).toFixed(1), height: Math.max(barHeight, 1) }));
  });
  return chart;
}
