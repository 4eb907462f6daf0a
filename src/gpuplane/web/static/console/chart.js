// A small line chart in inline SVG (no library): time on x, a value on y from 0, one path per
// series and a dot per sample (the latest dot only when there are many). Colours come from CSS
// classes (series-0..5) or, for tenants, a stroke attribute: no inline style (the CSP).
import { h, s, fmt } from "./dom.js";

const W = 640, H = 190, L = 44, R = 10, T = 10, B = 24, DOTS_MAX = 120;

/** Rounded-up axis maximum and its tick step (1, 2 or 5 times a power of ten). */
export function niceMax(v) {
  if (!(v > 0)) return { max: 1, step: 0.25 };
  const raw = v / 4, p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * p).find((x) => x >= raw);
  return { max: step * Math.ceil(v / step - 1e-9), step };
}

const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });

/**
 * lineChart({id, title, unit, times: [t...], series: [{name, values: [v...], cls?, color?}]})
 * -> a <figure> with the SVG and a legend giving each series' latest value.
 */
export function lineChart({ id, title, unit, times, series }) {
  const n = times.length;
  const top = niceMax(Math.max(0, ...series.flatMap((x) => x.values.filter((v) => v != null))));
  const t0 = times[0], t1 = times[n - 1];
  const x = (t) => L + (n > 1 && t1 > t0 ? ((t - t0) / (t1 - t0)) * (W - L - R) : (W - L - R) / 2);
  const y = (v) => T + (1 - v / top.max) * (H - T - B);
  const parts = [];
  for (let v = 0; v <= top.max + 1e-9; v += top.step) {
    parts.push(s("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }),
      s("text", { class: "tick", x: L - 6, y: y(v) + 3, "text-anchor": "end" }, fmt.n(v, 2)));
  }
  if (n) {
    parts.push(s("text", { class: "tick", x: L, y: H - 6 }, clock(t0)));
    if (n > 1) parts.push(s("text", { class: "tick", x: W - R, y: H - 6, "text-anchor": "end" }, clock(t1)));
  }
  series.forEach((ser, k) => {
    const cls = ser.cls || "series-" + (k % 6);
    const pts = ser.values.map((v, i) => (v == null ? null : [x(times[i]), y(v)]));
    const d = pts.map((p, i) => (p ? (i && pts[i - 1] ? "L" : "M") + p[0].toFixed(1) + " " + p[1].toFixed(1) : "")).join(" ");
    const stroke = ser.color || null;
    if (n > 1) parts.push(s("path", { class: "line " + cls, d, stroke, "data-series": ser.name }));
    const dots = n <= DOTS_MAX ? pts.map((p, i) => [p, i]) : [[pts[n - 1], n - 1]];
    for (const [p, i] of dots) {
      if (!p) continue;
      parts.push(s("circle", { class: "pt " + cls, cx: p[0].toFixed(1), cy: p[1].toFixed(1), r: 2.5, fill: stroke },
        s("title", {}, `${ser.name}: ${fmt.n(ser.values[i], 2)} ${unit} at ${clock(times[i])}`)));
    }
  });
  const latest = (ser) => (n ? ser.values[n - 1] : null);
  const summary = `${title}: ` + series.map((ser) => `${ser.name} ${latest(ser) == null ? "–" : fmt.n(latest(ser), 2)}`).join(", ") +
    (n ? ` ${unit}, ${n} sample(s) from ${clock(t0)} to ${clock(t1)}` : ", no sample yet");
  return h("figure", { class: "chart", id, dataset: { points: String(n) } },
    h("figcaption", {}, title),
    s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": summary, preserveAspectRatio: "xMidYMid meet" },
      s("title", {}, summary), ...parts),
    h("ul", { class: "legend" }, series.map((ser, k) => h("li", {},
      s("svg", { width: 14, height: 4, "aria-hidden": "true" },
        s("rect", { width: 14, height: 4, class: "swatch-line " + (ser.cls || "series-" + (k % 6)), fill: ser.color || null })),
      `${ser.name}: ${latest(ser) == null ? "–" : fmt.n(latest(ser), 2)} ${unit}`))));
}
