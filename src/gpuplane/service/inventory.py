"""Use-cases on shared infrastructure: sites, hosts, GPUs, cordon/drain.

Reading needs ``inventory.read`` (every role has it, at any scope); changing needs a global
admin or operator. Host views never show which tenants' tasks run there.
"""

from __future__ import annotations

from collections.abc import Iterable

from gpuplane.domain.validation import RESERVED_LABEL_PREFIX, reserved_labels
from gpuplane.domain.workloads import parse_memory_mib
from gpuplane.service.authz import Principal, Forbidden, require_global
from gpuplane.service.base import ServiceBase
from gpuplane.service.specs import HostSpec, HostStateSpec, SiteSpec, dump
from gpuplane.store.paging import Page
from gpuplane.store.records import Gpu, HostRecord, Site


def _check_reserved(principal: Principal, labels: Iterable[str], taints: Iterable[str] = (),
                    ) -> None:
    """Only gpuplane itself and global admins set keys under ``gpuplane.io/`` (a host claiming
    ``gpuplane.io/in.CH`` would claim a jurisdiction); a global operator may not."""
    bad = reserved_labels(labels) + [f"taint {k}" for k in reserved_labels(taints)]
    if bad and not any(g.role == "admin" and g.scope_kind == "global" for g in principal.grants):
        raise Forbidden(f"{', '.join(bad)}: keys under {RESERVED_LABEL_PREFIX!r} are reserved for "
                        "gpuplane and global admins; drop them or ask a global admin")


def _check_not_below_usage(tx, before: HostRecord, cpu_milli: int, memory_mib: int,  # noqa: ANN001
                           gpus: list[Gpu]) -> None:
    """Refuse (409 ``gpuplane.host.shrink_below_usage``, naming the tasks) an update that
    leaves a host less CPU or memory than its running tasks hold, or changes the mode of a
    GPU one of them holds: the control loop would have to over-commit it.
    Drain the host first (or wait for those tasks). Only global admins and operators update
    hosts, and they may see every task, so the tasks are named."""
    from gpuplane.domain.errors import Conflict

    mine = [t for t in tx.tasks.list_active()
            if t.placement is not None and t.placement.host == before.name]
    if not mine:
        return
    cpu = sum(t.cpu_milli for t in mine)
    mem = sum(t.memory_mib for t in mine)
    modes = {g.index: g.mode for g in gpus}
    old_modes = {g.index: g.mode for g in before.gpus}
    problems = []
    if cpu > cpu_milli:
        problems.append(f"its running tasks hold {cpu / 1000:g} cores, more than "
                        f"{cpu_milli / 1000:g}")
    if mem > memory_mib:
        problems.append(f"they hold {mem} MiB of memory, more than {memory_mib}")
    held = sorted({i for t in mine for i in t.placement.gpu_indices}
                  | {int(m["gpu_index"]) for t in mine for m in t.placement.mig})
    changed = [i for i in held if i in modes and modes[i] != old_modes.get(i)]
    if changed:   # a held GPU removed is refused by the store (``gpuplane.host.in_use``)
        problems.append(f"GPU(s) {changed} they hold would change mode")
    if not problems:
        return
    names = []
    for t in mine[:10]:
        w = tx.workloads.get(t.workload_id)
        names.append(f"{w.project}/{w.name} task {t.index}")
    more = f" and {len(mine) - 10} more" if len(mine) > 10 else ""
    raise Conflict(f"host {before.name!r} cannot shrink below what its running tasks hold: "
                   f"{'; '.join(problems)} (tasks: {', '.join(names)}{more}); drain the host "
                   "or wait for them to end, then update it",
                   code="gpuplane.host.shrink_below_usage")


def _read(principal: Principal) -> None:
    if not principal.may_anywhere("inventory.read"):
        raise Forbidden("you have no role that may read the inventory")


def gpu_from_spec(g) -> Gpu:  # noqa: ANN001
    return Gpu(g.index, g.model, g.memory_mib, g.numa, g.nvlink_domain, g.mode,
               tuple(m.model_dump() for m in g.mig_layout) if g.mig_layout is not None else None,
               g.uuid)


class InventoryService(ServiceBase):
    def create_site(self, principal: Principal, spec: SiteSpec) -> Site:
        require_global(principal, "governance.write", "sites")
        _check_reserved(principal, spec.labels)
        with self.store.write() as tx:
            site = tx.sites.add(spec.name, spec.jurisdiction, spec.region, spec.provider,
                                dict(spec.labels), self.now())
            self.audit(tx, principal.name, "site.create", "site", spec.name, detail=dump(spec))
            return site

    def get_site(self, principal: Principal, name: str) -> Site:
        _read(principal)
        with self.store.read() as tx:
            return tx.sites.get(name)

    def list_sites(self, principal: Principal, after: int | None, limit: int) -> Page[Site]:
        _read(principal)
        with self.store.read() as tx:
            return tx.sites.list(after, limit)

    def delete_site(self, principal: Principal, name: str) -> None:
        require_global(principal, "governance.write", "sites")
        with self.store.write() as tx:
            tx.sites.delete(name)
            self.audit(tx, principal.name, "site.delete", "site", name)

    def register_host(self, principal: Principal, spec: HostSpec) -> HostRecord:
        """Register a host with its GPUs. Conflict if the name exists."""
        require_global(principal, "inventory.write", "hosts")
        _check_reserved(principal, spec.labels, [t.key for t in spec.taints])
        with self.store.write() as tx:
            host = tx.hosts.add(
                spec.name, spec.site, int(round(spec.cpu * 1000)), parse_memory_mib(spec.memory),
                [gpu_from_spec(g) for g in spec.gpus], self.now(), rack=spec.rack,
                labels=dict(spec.labels), taints=[t.model_dump() for t in spec.taints],
                tee=spec.tee, driver=spec.driver, simulated=spec.simulated,
                declared=spec.declared)
            self.audit(tx, principal.name, "host.register", "host", spec.name,
                       detail={"site": spec.site, "gpus": len(spec.gpus),
                               "simulated": spec.simulated})
            return host

    def update_host(self, principal: Principal, name: str, spec: HostSpec,
                    generation: int | None = None) -> HostRecord:
        """Replace a registered host's capacity, GPUs, labels and taints (re-discovery, fleet
        reload). Its site, driver and state stay. Guarded by ``generation`` when given."""
        require_global(principal, "inventory.write", "hosts")
        if spec.name != name:
            from gpuplane.domain.errors import FieldError, InvalidInput

            raise InvalidInput("the body names another host than the path",
                               [FieldError("name", f"must be {name!r}")])
        with self.store.write() as tx:
            before = tx.hosts.get(name)
            # reserved keys kept as they are need no global admin; adding or changing one does
            old_taints = {(t.get("key"), t.get("value"), t.get("effect")) for t in before.taints}
            _check_reserved(principal,
                            [k for k, v in spec.labels.items() if before.labels.get(k) != v],
                            [t.key for t in spec.taints
                             if (t.key, t.value, t.effect) not in old_taints])
            _check_not_below_usage(tx, before, int(round(spec.cpu * 1000)),
                                   parse_memory_mib(spec.memory),
                                   [gpu_from_spec(g) for g in spec.gpus])
            host = tx.hosts.replace(
                name, before.generation if generation is None else generation,
                int(round(spec.cpu * 1000)), parse_memory_mib(spec.memory),
                [gpu_from_spec(g) for g in spec.gpus], rack=spec.rack, labels=dict(spec.labels),
                taints=[t.model_dump() for t in spec.taints], tee=spec.tee,
                simulated=spec.simulated, declared=spec.declared)
            tx.events.add(self.now(), "Normal", "HostUpdated",
                          f"host {name}: {len(before.gpus)} -> {len(host.gpus)} GPUs, "
                          f"{before.cpu_milli / 1000:g} -> {host.cpu_milli / 1000:g} cores",
                          host=name)
            self.audit(tx, principal.name, "host.update", "host", name,
                       detail={"gpus": len(spec.gpus), "cpu": spec.cpu})
            return host

    def get_host(self, principal: Principal, name: str) -> HostRecord:
        _read(principal)
        with self.store.read() as tx:
            return tx.hosts.get(name)

    def list_hosts(self, principal: Principal, after: int | None, limit: int,
                   site: str | None = None) -> Page[HostRecord]:
        _read(principal)
        with self.store.read() as tx:
            return tx.hosts.list(after, limit, site=site)

    def set_host_state(self, principal: Principal, name: str, spec: HostStateSpec) -> HostRecord:
        """Cordon (no new tasks), drain (no new tasks; the control loop moves running tasks
        off), mark down, or make ready again. Generation-guarded when ``spec.generation``."""
        require_global(principal, "inventory.write", "hosts")
        with self.store.write() as tx:
            before = tx.hosts.get(name)
            host = tx.hosts.set_state(name, spec.state, spec.generation)
            tx.events.add(self.now(), "Normal", f"Host{spec.state.capitalize()}",
                          f"host {name} is now {spec.state} (was {before.state})", host=name)
            self.audit(tx, principal.name, f"host.{spec.state}", "host", name,
                       detail={"from": before.state, "to": spec.state})
            return host

    def delete_host(self, principal: Principal, name: str) -> None:
        require_global(principal, "inventory.write", "hosts")
        with self.store.write() as tx:
            tx.hosts.delete(name)
            self.audit(tx, principal.name, "host.delete", "host", name)

    def list_gpus(self, principal: Principal, after: int | None, limit: int,
                  model: str | None = None) -> Page[tuple[HostRecord, Gpu, int]]:
        """(host, GPU, allocated milli-GPU) for the GPUs of a page of hosts; ``allocated``
        sums the shares of tasks holding resources there (a MIG instance counts 1000 / 7 per
        compute slice), without saying whose they are."""
        _read(principal)
        with self.store.read() as tx:
            page = tx.hosts.list(after, limit)
            active = tx.tasks.list_active()
        used: dict[tuple[str, int], int] = {}
        for t in active:
            p = t.placement
            if p is None:
                continue
            for i, milli in p.share_milli().items():
                used[(p.host, i)] = used.get((p.host, i), 0) + milli
        items = [(h, g, min(1000, used.get((h.name, g.index), 0)))
                 for h in page.items for g in h.gpus if model is None or g.model == model]
        return Page(items, page.next_after)

    def gpu_models(self, principal: Principal) -> list[str]:
        _read(principal)
        with self.store.read() as tx:
            return sorted(tx.hosts.gpu_models())
