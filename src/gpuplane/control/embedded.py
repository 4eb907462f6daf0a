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
import threading
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError

from gpuplane.control.loop import ControlLoop, holder_id
from gpuplane.control.logsource import DriverLogSource
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


class Embedded:
    """Everything ``gpuplane up`` runs, built but not started."""

    def __init__(self, settings: Any, *, demo: bool = True, demo_file: Path | None = None,
                 host_name: str | None = None, local_gpus: str | None = None,
                 jurisdiction: str = "", port: int = 8080) -> None:
        from gpuplane.service import Principal, Services
        from gpuplane.store import Store

        self.settings = settings
        self.home = Path(settings.home).resolve()
        self.home.mkdir(parents=True, exist_ok=True)
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
                                             inventory=self.inventory),
                        "sim": make_driver("sim", home=self.home)}
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
                                lease_log=self.home / "lease.log")
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
        try:
            self.services.inventory.register_host(self.system, HostSpec(
                name=self.host, site=LOCAL_SITE, cpu=inv.cpu_milli / 1000,
                memory=inv.memory_mib, gpus=gpus, labels=labels, driver="local",
                simulated=False, declared=inv.source == "declared"))
        except Conflict:
            pass  # registered by an earlier run (or the other process on this database)
        for note in inv.notes:
            log.info("local host %s: %s", self.host, note)

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
