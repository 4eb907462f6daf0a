"""The embedded control plane of ``gpuplane up``: store, drivers, local host, demo fleet, loop.

``Embedded(settings, ...)`` wires the parts: the store (migrated), the bootstrap admin token
(written to ``$GPUPLANE_HOME/admin-token``, mode 0600), the real local host (NVML inventory
or declared GPUs), the demo fleet, the drivers, the control loop (in a thread, scheduling only
while it holds the database lease). ``cli/up.py`` adds the API and the dashboard and serves.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import stat
import threading
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError

from gpuplane.control.governing import audit_signing
from gpuplane.control.loop import ControlLoop, holder_id
from gpuplane.control.logsource import DriverLogSource
from gpuplane.control.placement_sync import PlacementReconciler
from gpuplane.domain.errors import Conflict, FieldError, GpuplaneError, InvalidInput
from gpuplane.drivers.local_inventory import LocalHostInfo, discover_local_host
from gpuplane.drivers.registry import make_driver

log = logging.getLogger("gpuplane.up")

LOCAL_SITE = "local"
DEMO_FLEET = Path(__file__).resolve().parents[3] / "examples" / "fleet-demo.yaml"


def local_host_name(raw: str | None = None) -> str:
    """This machine's name as a valid host name (lower case, dots and dashes)."""
    name = re.sub(r"[^a-z0-9.-]", "-", (raw or socket.gethostname() or "localhost").lower())
    return name.strip("-.") or "localhost"


def write_token(path: Path, token: str) -> None:
    """Write the admin token readable by its owner only (0600), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


#: The umask ``gpuplane up`` runs under: whatever it (or a task it starts) creates later, the
#: database, its -wal/-shm files, logs/, local/, lease.log, task logs, is its owner's only.
STATE_UMASK = 0o077


def secure_home(home: Path) -> list[str]:
    """Make ``home`` and what it holds owner-only: folders 0700, files without group and
    other bits (0600 for ordinary files). Only entries owned by this process's user are
    changed (a task's folder handed to another uid keeps its owner's choice), and links are
    not followed. A shared folder (world-writable or sticky, such as /tmp) used as home is
    left as it is, and its contents too. Returns what was left alone, for a warning."""
    me = os.geteuid()
    st = os.lstat(home)
    if st.st_mode & (stat.S_ISVTX | stat.S_IWOTH):
        return [f"{home} is a shared folder (world-writable or sticky): its modes are left "
                "as they are; use a folder of its own as GPUPLANE_HOME"]

    def tighten(path: str, is_dir: bool) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode) or st.st_uid != me:
            return
        mode = stat.S_IMODE(st.st_mode)
        want = (mode & 0o700) | (0o700 if is_dir else 0o600)
        if want != mode:
            os.chmod(path, want)

    tighten(str(home), True)
    for root, dirs, files in os.walk(home):
        for d in list(dirs):
            full = os.path.join(root, d)
            tighten(full, True)
            if os.lstat(full).st_uid != me:
                dirs.remove(d)  # not ours: do not walk into it
        for f in files:
            tighten(os.path.join(root, f), False)
    return []


def local_sandbox_options(settings: Any, home: Path) -> dict[str, Any]:
    """The local driver's sandbox options from the settings: ``--unsandboxed``, the task uid
    range, and the SQLite database's folder to hide from tasks when it is not in ``home``."""
    hide: list[Path] = []
    url = str(settings.database_url)
    if url.startswith("sqlite:///"):
        db = Path(url[len("sqlite:///"):].split("?", 1)[0]).resolve()
        if not db.is_relative_to(home) and db.parent != Path("/"):
            hide.append(db.parent)  # the file and its -wal/-shm companions
    return {"unsandboxed": bool(getattr(settings, "unsandboxed", False)),
            "uid_base": int(getattr(settings, "task_uid_base", 200_000)),
            "uid_count": int(getattr(settings, "task_uid_count", 65_536)), "hide": hide}


class Embedded:
    """Everything ``gpuplane up`` runs, built but not started."""

    def __init__(self, settings: Any, *, demo: bool = True, demo_file: Path | None = None,
                 host_name: str | None = None, local_gpus: str | None = None,
                 jurisdiction: str = "", port: int = 8080) -> None:
        from gpuplane.service import Principal, Services
        from gpuplane.store import Store

        self.settings = settings
        self.home = Path(settings.home).resolve()
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        for note in secure_home(self.home):
            log.warning("%s", note)
        self.store = Store(settings.database_url)
        try:
            self.store.migrate()
        except OperationalError as exc:
            where = settings.database_url.split("@")[-1]
            raise GpuplaneError("gpuplane.db.unreachable",
                                f"cannot open the database at {where}: "
                                f"{str(exc.orig).splitlines()[0] if exc.orig else exc}; check "
                                "GPUPLANE_DB_URL") from None
        self.host = local_host_name(host_name)
        self.inventory: LocalHostInfo = discover_local_host(self.host, local_gpus)
        self.drivers = {"local": make_driver("local", home=self.home, host=self.host,
                                             inventory=self.inventory,
                                             **local_sandbox_options(settings, self.home)),
                        "sim": make_driver("sim", home=self.home)}
        if settings.nova_url:
            self.drivers["nova"] = make_driver(
                "nova", url=settings.nova_url, token=settings.nova_token,
                image_id=settings.nova_image or "", project_id=settings.nova_project_id,
                user_id=settings.nova_user_id, hosts=self._nova_host_view,
                host_labels=self._nova_host_labels)
        self.log_source = DriverLogSource(settings.logs_dir, self.drivers)
        self.services = Services(self.store, log_source=self.log_source)
        self.system = Principal.system("gpuplane-up")
        self.token_path = Path(settings.admin_token_path)
        self.token_written = self._bootstrap()
        self._register_local(jurisdiction)
        self.demo_loaded = 0
        if demo:
            self.demo_loaded = self.load_fleet(demo_file or DEMO_FLEET)
        self.loop = ControlLoop(self.store, self.drivers, holder=holder_id(self.host, port),
                                lease_ttl_s=settings.lease_ttl_s,
                                interval_s=settings.cycle_interval_s, local_host=self.host,
                                preempt_grace_s=settings.preempt_grace_s,
                                lease_log=self.home / "lease.log",
                                audit=audit_signing(settings),
                                placement=PlacementReconciler.from_settings(settings))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- set-up ------------------------------------------------------------------
    def _bootstrap(self) -> bool:
        """Create the first admin on an empty database and save its token; on an existing
        database issue a new token only when the saved one is missing. True if written."""
        token = self.services.bootstrap_admin()
        if token is None and not self.token_path.exists():
            token = self.services.bootstrap_admin(new_token_if_exists=True)
        if token is None:
            return False
        write_token(self.token_path, token)
        return True

    def _register_local(self, jurisdiction: str) -> None:
        from gpuplane.service.specs import GpuSpec, HostSpec, SiteSpec

        inv = self.inventory
        try:
            self.services.inventory.create_site(self.system, SiteSpec(
                name=LOCAL_SITE, jurisdiction=jurisdiction, provider="this machine"))
        except Conflict:
            pass
        gpus = [GpuSpec(index=g.index, model=g.model, memory_mib=max(1, g.memory_mib), numa=g.numa,
                        mode="mig" if g.mig else "whole", uuid=g.uuid,
                        mig_layout=[{"profile": m.profile, "start": m.start} for m in g.mig
                                    if m.start >= 0] or None if g.mig else None)
                for g in inv.gpus]
        labels = {"gpuplane.io/driver": "local", "gpuplane.io/simulated": "false",
                  "gpuplane.io/inventory": inv.source}
        local = self.drivers["local"]
        labels.update(local.labels())  # gpuplane.io/sandbox, gpuplane.io/cgroups
        try:
            self.services.inventory.register_host(self.system, HostSpec(
                name=self.host, site=LOCAL_SITE, cpu=inv.cpu_milli / 1000,
                memory=inv.memory_mib, gpus=gpus, labels=labels, driver="local",
                simulated=False, declared=inv.source == "declared"))
        except Conflict:
            # registered by an earlier run (or the other process on this database): keep
            # what it says about the sandbox true
            self._refresh_sandbox_labels(local.labels())
        for note in inv.notes:
            log.info("local host %s: %s", self.host, note)
        for note in getattr(local, "notes", ()):
            log.warning("local host %s: %s", self.host, note)
        if getattr(local, "mode", "bwrap") != "bwrap":
            self._audit_sandbox(local)

    def _refresh_sandbox_labels(self, want: dict[str, str]) -> None:
        import dataclasses

        from gpuplane.service.specs import HostSpec

        try:
            rec = self.services.inventory.get_host(self.system, self.host)
            if all(rec.labels.get(k) == v for k, v in want.items()):
                return
            self.services.inventory.update_host(self.system, self.host, HostSpec(
                name=rec.name, site=rec.site, cpu=rec.cpu_milli / 1000, memory=rec.memory_mib,
                gpus=[{k: v for k, v in dataclasses.asdict(g).items() if v is not None}
                      for g in rec.gpus],
                rack=rec.rack, labels={**rec.labels, **want}, taints=list(rec.taints),
                tee=rec.tee, driver=rec.driver, simulated=rec.simulated,
                declared=rec.declared))
        except Exception as exc:  # noqa: BLE001 - a stale label must not stop gpuplane up
            log.warning("local host %s: cannot update its sandbox labels to %s: %s",
                        self.host, want, exc)

    def _nova_host_view(self, name: str) -> Any:
        """The host's GPU models/modes for the nova driver's flavors (None if unknown)."""
        from gpuplane.drivers.openstack.tree import host_view
        try:
            return host_view(self.services.inventory.get_host(self.system, name))
        except Exception:  # noqa: BLE001 - an unknown host gives a flavor without models
            return None

    def _nova_host_labels(self, name: str) -> dict[str, str]:
        try:
            return dict(self.services.inventory.get_host(self.system, name).labels)
        except Exception:  # noqa: BLE001
            return {}

    def _audit_sandbox(self, local: Any) -> None:
        """An audit entry each start that tasks on this host run without a sandbox."""
        inv = self.services.inventory
        with self.store.write() as tx:
            inv.audit(tx, self.system.name, "host.sandbox", "host", self.host,
                      detail={"sandbox": local.mode, "cgroups": local.cgroups.mode,
                              "notes": list(local.notes)})

    def load_fleet(self, path: Path) -> int:
        """Register the objects of a fleet file (sites, hosts, tenants, quotas) that do not
        exist yet; returns how many were created. Raises ``InvalidInput`` naming the document."""
        import yaml

        from gpuplane.service import specs

        if not path.exists():
            log.warning("demo fleet %s not found; starting without it", path)
            return 0
        makers = {
            "site": (specs.SiteSpec, self.services.inventory.create_site),
            "host": (specs.HostSpec, self.services.inventory.register_host),
            "organisation": (specs.OrganisationSpec, self.services.tenancy.create_organisation),
            "project": (specs.ProjectSpec, self.services.tenancy.create_project),
            "quota": (specs.QuotaSpec, self.services.policy.set_quota),
            "priorityclass": (specs.PriorityClassSpec, self.services.policy.create_priority_class),
        }
        created = 0
        for i, doc in enumerate(yaml.safe_load_all(path.read_text(encoding="utf-8"))):
            if not doc:
                continue
            kind = str(doc.get("kind", "")).lower()
            if kind not in makers:
                raise InvalidInput(f"{path.name}: document {i} has an unknown kind",
                                   [FieldError(f"documents[{i}].kind", repr(doc.get('kind')))])
            spec_cls, make = makers[kind]
            body = {k: v for k, v in doc.items() if k not in ("kind", "apiVersion")}
            try:
                make(self.system, spec_cls(**body))
                created += 1
            except Conflict:
                pass
            except GpuplaneError:
                raise
            except ValueError as exc:  # pydantic ValidationError
                raise InvalidInput(f"{path.name}: document {i} ({kind}) is invalid: {exc}",
                                   [FieldError(f"documents[{i}]", str(exc).splitlines()[0])]
                                   ) from None
        return created

    # -- running -----------------------------------------------------------------
    def leader(self) -> str | None:
        state = self.store.leases.get()
        return state.holder if state is not None else None

    def start_loop(self) -> None:
        self._thread = threading.Thread(target=self.loop.run, args=(self._stop,),
                                        name="gpuplane-control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.store.dispose()
