// What the signed-in user may do, from GET /v1/whoami (the same role table as the server's
// service/authz.py), so that the console shows no button the server would refuse.
const WRITE = new Set(["admin", "operator", "member"]);
const AUDIT = new Set(["admin", "auditor"]);

function covers(b, project, org) {
  return b.scope === "global" || (b.scope === "organisation" && b.scope_name === org) ||
    (b.scope === "project" && b.scope_name === project);
}

export function can(me, action, project = null, org = null) {
  const roles = (me && me.roles) || [];
  const set = action === "workload.write" ? WRITE : action === "audit.read" ? AUDIT : null;
  if (!set) return false;
  return roles.some((b) => set.has(b.role) && (project === null ? true : covers(b, project, org)));
}

/** Audit verification needs a global admin or auditor (GET /v1/audit/verify). */
export const canVerify = (me) => ((me && me.roles) || []).some((b) => AUDIT.has(b.role) && b.scope === "global");

/** Projects the user may submit to, when the bindings name them (global: any). */
export function writableProjects(me) {
  return ((me && me.roles) || []).filter((b) => WRITE.has(b.role) && b.scope === "project").map((b) => b.scope_name);
}
