// Submit a workload: a YAML or JSON spec posted to POST /v1/workloads. Shown only to users
// with a role that may write workloads.
import { h } from "../dom.js";
import { api } from "../api.js";
import { parseSpec } from "../yaml.js";
import { writableProjects } from "../roles.js";

export const deps = [];

function template(project) {
  return `kind: Job
name: console-demo
project: ${project}
labels:
  gpuplane.io/sim-duration-s: "60"
tasks:
  - command: ["python", "train.py"]
    resources: {cpu: 1, memory: 1Gi, gpus: 1}
`;
}

let draft = null;

export function render(root, state, ctx) {
  const projects = writableProjects(state.whoami);
  const area = h("textarea", { id: "spec", name: "spec", rows: 16, cols: 72, spellcheck: "false", required: true,
    "aria-describedby": "spec-help", oninput: (e) => { draft = e.target.value; } });
  area.value = draft ?? template(projects[0] || "default");
  const result = h("div", { id: "submit-result", role: "status", "aria-live": "polite" });
  const form = h("form", { id: "submit-form", onsubmit: async (ev) => {
    ev.preventDefault();
    result.replaceChildren();
    let spec;
    try {
      spec = parseSpec(area.value);
      if (spec && typeof spec.kind === "string") spec.kind = spec.kind.toLowerCase();
      if (spec && spec.kind === "workload") delete spec.kind;
    } catch (e) {
      result.append(h("p", { class: "error" }, "Cannot read the spec: " + e.message));
      return;
    }
    try {
      const w = await api("/v1/workloads", { method: "POST", body: spec });
      draft = null;
      result.append(h("p", { class: "ok" }, "Submitted ", h("a", { href: "#/workload/" + w.id }, w.name), ` (${w.id}), now ${w.status.phase}.`));
    } catch (e) {
      result.append(h("p", { class: "error" }, e.message + (e.code ? ` [${e.code}]` : "")),
        e.errors.length ? h("ul", {}, e.errors.map((x) => h("li", {}, `${x.loc}: ${x.msg}`))) : null);
    }
  } },
  h("label", { for: "spec" }, "Workload spec (YAML or JSON)"),
  h("p", { id: "spec-help", class: "note" }, "Fields as in POST /v1/workloads or gpuplane apply -f (kind Job/Service/Batch). ",
    projects.length ? "Projects you may submit to: " + projects.join(", ") + "." : ""),
  area,
  h("div", {}, h("button", { type: "submit", id: "submit-button" }, "Submit workload")));
  return h("div", {}, form, result);
}
