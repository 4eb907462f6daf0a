// Tiny DOM helpers: every text goes through textContent, so no data is parsed as HTML.
const SVG = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** h("button", {type: "button", onclick}, "Cancel") */
export const h = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);
/** s("rect", {x, y, width, height}) for inline SVG */
export const s = (tag, attrs, ...children) => build(document.createElementNS(SVG, tag), attrs, children);

export function replace(root, ...children) {
  root.replaceChildren();
  return build(root, {}, children);
}

export function table(caption, headers, rows, empty = "Nothing to show.") {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h("table", {},
    h("caption", { class: "sr-only" }, caption),
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))));
}

export const fmt = {
  n: (v, d = 1) => (Math.round(v * 10 ** d) / 10 ** d).toLocaleString("en"),
  pct: (a, b) => (b ? Math.round((100 * a) / b) + " %" : "–"),
  time: (t) => (t ? new Date(t * 1000).toLocaleString() : "–"),
  ago: (t) => {
    if (!t) return "–";
    const s = Math.max(0, Date.now() / 1000 - t);
    return s < 90 ? Math.round(s) + " s ago" : s < 5400 ? Math.round(s / 60) + " min ago" : Math.round(s / 3600) + " h ago";
  },
};

/** A stable colour per tenant (project) name: the hue from a string hash. */
export function tenantHue(name) {
  let x = 0;
  for (const ch of name) x = (x * 31 + ch.codePointAt(0)) >>> 0;
  return x % 360;
}
