// Loss curves drawn as SVG: training loss (solid) and validation loss (dashed) against
// epochs, with axes and a few gridlines. The <svg> carries data-train-points and
// data-valid-points so one can tell what it shows without reading pixels.

const SVG = "http://www.w3.org/2000/svg";
function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  parent?.appendChild(node);
  return node;
}

// A few round numbers covering [lo, hi].
function ticks(lo, hi, count = 5) {
  const span = hi - lo || 1;
  const step0 = span / count;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(+v.toFixed(10));
  return out;
}

// series: {train: [[x, y]...], valid: [[x, y]...]}, x in epochs
export function drawLossChart(container, series, { epochs = 1 } = {}) {
  const W = 640, H = 300, m = { l: 48, r: 14, t: 14, b: 34 };
  const all = [...series.train, ...series.valid].filter(([, y]) => Number.isFinite(y));
  const svg = el("svg", {
    viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
    "aria-label": "Training and validation loss by epoch",
    "data-train-points": series.train.length, "data-valid-points": series.valid.length,
  });
  const xMax = Math.max(epochs, ...all.map(([x]) => x), 1);
  let yLo = Math.min(...all.map(([, y]) => y)), yHi = Math.max(...all.map(([, y]) => y));
  if (!all.length) { yLo = 0; yHi = 1; }
  const pad = (yHi - yLo) * 0.1 || 0.1;
  yLo = Math.max(0, yLo - pad); yHi += pad;
  const X = (x) => m.l + (x / xMax) * (W - m.l - m.r);
  const Y = (y) => H - m.b - ((y - yLo) / (yHi - yLo)) * (H - m.t - m.b);

  for (const v of ticks(yLo, yHi)) {
    el("line", { x1: m.l, x2: W - m.r, y1: Y(v), y2: Y(v), class: "grid-line" }, svg);
    el("text", { x: m.l - 6, y: Y(v) + 4, "text-anchor": "end" }, svg).textContent = v;
  }
  for (const v of ticks(0, xMax, Math.min(10, Math.ceil(xMax)))) {
    el("text", { x: X(v), y: H - m.b + 16, "text-anchor": "middle" }, svg).textContent = v;
  }
  el("line", { x1: m.l, x2: m.l, y1: m.t, y2: H - m.b, class: "axis" }, svg);
  el("line", { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, class: "axis" }, svg);
  el("text", { x: (W + m.l) / 2, y: H - 4, "text-anchor": "middle" }, svg).textContent = "epoch";
  el("text", { x: 12, y: (H - m.b) / 2, transform: `rotate(-90 12 ${(H - m.b) / 2})`, "text-anchor": "middle" }, svg)
    .textContent = "loss (nats/token)";

  for (const [name, points] of [["train", series.train], ["valid", series.valid]]) {
    const finite = points.filter(([, y]) => Number.isFinite(y));
    if (finite.length > 1) {
      el("polyline", { points: finite.map(([x, y]) => `${X(x)},${Y(y)}`).join(" "), class: name }, svg);
    }
    for (const [x, y] of finite) {
      el("circle", { cx: X(x), cy: Y(y), r: 3, class: `dot-${name}` }, svg);
    }
  }
  container.replaceChildren(svg);
  return svg;
}
