// A small YAML reader for workload specs typed into the submit form: block mappings and
// sequences by indentation, "- key: value" items, flow [a, b] and {k: v} of scalars, quoted
// strings, "|" and ">" block scalars, comments. Anchors, tags and multi-document files are not
// supported (JSON is: it is tried first).

function scalar(text) {
  const t = text.trim();
  if (t === "" || t === "~" || t === "null") return null;
  if (t === "true") return true;
  if (t === "false") return false;
  if (/^-?\d+$/.test(t)) return parseInt(t, 10);
  if (/^-?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$/.test(t)) return parseFloat(t);
  if (t.startsWith('"')) return JSON.parse(t);
  if (t.startsWith("'")) return t.slice(1, -1).replace(/''/g, "'");
  if (t.startsWith("[") || t.startsWith("{")) return flow(t);
  return t;
}

function splitTop(body) {
  const parts = [];
  let depth = 0, quote = null, cur = "";
  for (const ch of body) {
    if (quote) { cur += ch; if (ch === quote) quote = null; continue; }
    if (ch === '"' || ch === "'") quote = ch;
    if ("[{".includes(ch)) depth++;
    if ("]}".includes(ch)) depth--;
    if (ch === "," && depth === 0) { parts.push(cur); cur = ""; } else cur += ch;
  }
  if (cur.trim()) parts.push(cur);
  return parts;
}

function flow(t) {
  const body = t.slice(1, -1);
  if (t.startsWith("[")) return splitTop(body).map(scalar);
  const out = {};
  for (const part of splitTop(body)) {
    const i = keyColon(part);
    if (i < 0) throw new Error("expected key: value in " + t);
    out[part.slice(0, i).trim().replace(/^["']|["']$/g, "")] = scalar(part.slice(i + 1));
  }
  return out;
}

function keyColon(line) {
  let quote = null;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (quote) { if (ch === quote) quote = null; continue; }
    if (ch === '"' || ch === "'") quote = ch;
    else if ("[{".includes(ch)) return -1;
    else if (ch === ":" && (i + 1 === line.length || line[i + 1] === " ")) return i;
  }
  return -1;
}

function stripComment(line) {
  let quote = null;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (quote) { if (ch === quote) quote = null; continue; }
    if (ch === '"' || ch === "'") quote = ch;
    else if (ch === "#" && (i === 0 || line[i - 1] === " ")) return line.slice(0, i).trimEnd();
  }
  return line.trimEnd();
}

export function parseYaml(text) {
  const raw = text.replace(/\t/g, "  ").split("\n");
  let pos = 0;

  const indentOf = (l) => l.length - l.trimStart().length;
  function next() {
    while (pos < raw.length) {
      const l = stripComment(raw[pos]);
      if (l.trim() === "" || l.trim() === "---") { pos++; continue; }
      return { indent: indentOf(l), text: l.trim() };
    }
    return null;
  }

  function blockScalar(style, parentIndent) {
    const lines = [];
    let ind = null;
    while (pos < raw.length) {
      const l = raw[pos];
      if (l.trim() !== "" && indentOf(l) <= parentIndent) break;
      if (ind === null && l.trim() !== "") ind = indentOf(l);
      lines.push(l.trim() === "" ? "" : l.slice(ind ?? 0));
      pos++;
    }
    while (lines.length && lines[lines.length - 1] === "") lines.pop();
    return style === "|" ? lines.join("\n") + "\n" : lines.join(" ") + "\n";
  }

  function value(rest, indent) {
    const r = rest.trim();
    if (r === "|" || r === ">" || r === "|-" || r === ">-") {
      const v = blockScalar(r[0], indent);
      return r.endsWith("-") ? v.replace(/\n$/, "") : v;
    }
    if (r !== "") return scalar(r);
    const n = next();
    if (!n || n.indent < indent || (n.indent === indent && !n.text.startsWith("- "))) return null;
    return block(n.indent);
  }

  function block(indent) {
    const first = next();
    if (first.text.startsWith("- ") || first.text === "-") {
      const out = [];
      for (let n = next(); n && n.indent === indent && (n.text.startsWith("- ") || n.text === "-"); n = next()) {
        const item = n.text.slice(1).trim();
        const childIndent = indent + (n.text.length - item.length);
        if (item === "") { pos++; out.push(value("", indent)); continue; }
        if (/^[|>]-?$/.test(item)) { pos++; out.push(value(item, indent)); continue; }
        if (keyColon(item) > 0) {
          // "- key: value": a mapping whose first line sits after the dash
          raw[pos] = " ".repeat(childIndent) + item;
          out.push(block(childIndent));
        } else { pos++; out.push(scalar(item)); }
      }
      return out;
    }
    const out = {};
    for (let n = next(); n && n.indent === indent; n = next()) {
      const i = keyColon(n.text);
      if (i < 0) throw new Error(`line ${pos + 1}: expected "key: value"`);
      const key = n.text.slice(0, i).trim().replace(/^["']|["']$/g, "");
      pos++;
      out[key] = value(n.text.slice(i + 1), indent);
    }
    return out;
  }

  const n = next();
  if (!n) return null;
  const doc = block(n.indent);
  const rest = next();
  if (rest) throw new Error(`line ${pos + 1}: unexpected indentation`);
  return doc;
}

/** JSON if it parses as JSON, else the YAML subset above. */
export function parseSpec(text) {
  const t = text.trim();
  if (t.startsWith("{")) return JSON.parse(t);
  return parseYaml(text);
}
