"""Nova for gpuplane's VM workloads (issue 9, item 4), through openstacksdk.

``NovaClient`` creates, watches and deletes servers whose flavors carry what gpuplane placed
(``nova_flavors.flavor_for``): ``ensure_flavor`` creates a flavor once per shape (its id is
derived from its contents, so concurrent creators agree), ``create_server`` boots from an image
with ``networks: none`` (microversion >= 2.37), ``wait`` watches until ACTIVE or ERROR, ``boot``
does all three and raises ``ServerFailed`` on ERROR (``reason="no_valid_host"`` when Nova found
no host with the room: a capacity refusal to re-plan, like a Placement 409), ``delete_server``
deletes and waits until the server is gone.

Every openstacksdk / keystoneauth error becomes a ``GpuplaneError`` with a stable code and
Nova's own message (``NovaError``: ``gpuplane.openstack.nova_unreachable``, ``..nova_refused``
for a 4xx, ``..nova_failed`` for a 5xx; ``NovaNotFound``; ``ServerFailed``; ``WatchTimeout``),
never a traceback.

Watching normally reads ``GET /servers/{id}`` (status, fault). A Nova without Neutron (the test
harness ``scripts/openstack/nova.sh``) answers that with 500 ``EmptyCatalog`` (the security
group lookup); the client then watches, for the rest of its life, through the brief listing
``GET /servers?status=...`` (which needs no Neutron) and takes the fault from the server's
instance actions (``details``, microversion 2.84). docs/openstack.md, "Nova", says which calls
were tested live and which against recorded responses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from gpuplane.domain.errors import Conflict, GpuplaneError
from gpuplane.domain.errors import NotFound as DomainNotFound
from gpuplane.drivers.openstack.nova_flavors import FlavorSpec

SETTLED = ("ACTIVE", "ERROR")
"""Statuses ``wait`` stops at by default."""
_NO_VALID_HOST = "no valid host"


class NovaError(GpuplaneError):
    """Nova could not be reached, or refused or failed a request. ``status``: the HTTP status
    (``None`` when Nova was not reached)."""

    def __init__(self, detail: str, *, status: int | None, code: str) -> None:
        super().__init__(code=code, detail=detail)
        self.status = status


class NovaNotFound(DomainNotFound):
    """A 404 from Nova: the server, flavor or image does not exist (any more)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, code="gpuplane.openstack.nova_not_found")


class ServerFailed(GpuplaneError):
    """A server went to ERROR. ``reason``: ``no_valid_host`` (no compute host had the room or
    the traits: re-plan), ``build_failed`` or ``delete_failed``; ``fault`` is Nova's message."""

    def __init__(self, server_id: str, reason: str, fault: str | None) -> None:
        what = {"no_valid_host": "no compute host has the requested resources",
                "delete_failed": "Nova could not delete it",
                "build_failed": "it failed to build"}[reason]
        super().__init__(code=f"gpuplane.openstack.server_{reason}",
                         detail=f"server {server_id} is in ERROR: {what}"
                                + (f" (Nova: {fault.strip()})" if fault else ""))
        self.server_id = server_id
        self.reason = reason
        self.fault = fault


class WatchTimeout(GpuplaneError):
    """A server did not reach the awaited state in time; ``last`` is the last state seen."""

    def __init__(self, server_id: str, wanted: str, last: str, timeout_s: float) -> None:
        super().__init__(code="gpuplane.openstack.server_timeout",
                         detail=f"server {server_id} is still {last} after {timeout_s:g} s "
                                f"(waiting for {wanted})")
        self.server_id = server_id
        self.last = last


@dataclass(frozen=True)
class ServerState:
    """What gpuplane reads of a server. ``via``: ``show`` (``GET /servers/{id}``) or ``list``
    (the brief listing, which has no host, flavor or fault of its own)."""

    id: str
    status: str
    name: str = ""
    task_state: str | None = None
    host: str | None = None
    flavor: Mapping[str, Any] | None = None
    fault: str | None = None
    via: str = "show"


def _message(exc: Any) -> str:
    """Nova's own sentence from an error body (``{"badRequest": {"message": ...}}``)."""
    resp = getattr(exc, "response", None)
    try:
        body = resp.json() if resp is not None else None
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        for value in body.values():
            if isinstance(value, Mapping) and value.get("message"):
                return " ".join(str(value["message"]).split())
    details = getattr(exc, "details", None)
    return " ".join(str(details or exc).split())


def _need_sdk() -> None:
    try:
        import openstack  # noqa: F401
    except ImportError:
        raise GpuplaneError(code="gpuplane.openstack.sdk_missing",
                            detail="the Nova driver needs openstacksdk: pip install "
                                   "'gpuplane[openstack]'") from None


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn openstacksdk and keystoneauth errors raised inside into gpuplane errors."""
    from keystoneauth1 import exceptions as ks_exc
    from openstack import exceptions as os_exc

    try:
        yield
    except os_exc.NotFoundException as exc:
        raise NovaNotFound(f"{what}: {_message(exc)}") from None
    except os_exc.HttpException as exc:
        status = exc.status_code
        code = "gpuplane.openstack.nova_refused" if status and status < 500 \
            else "gpuplane.openstack.nova_failed"
        raise NovaError(f"{what}: Nova answered {status}: {_message(exc)}", status=status,
                        code=code) from None
    except (ks_exc.ConnectionError, ks_exc.DiscoveryFailure) as exc:
        raise NovaError(f"{what}: Nova cannot be reached ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:300]})", status=None,
                        code="gpuplane.openstack.nova_unreachable") from None
    except (os_exc.SDKException, ks_exc.ClientException) as exc:
        raise NovaError(f"{what}: {type(exc).__name__}: {' '.join(str(exc).split())[:500]}",
                        status=None, code="gpuplane.openstack.nova_failed") from None


class NovaClient:
    """gpuplane's calls to one Nova (one ``openstack.connection.Connection``)."""

    def __init__(self, connection: Any, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._conn = connection
        self._proxy: Any = None
        self._clock = clock
        self._sleep = sleep
        self.show_unavailable: str | None = None
        """Why ``GET /servers/{id}`` is not used (Nova answered 500), or ``None``."""

    @property
    def _compute(self) -> Any:
        """openstacksdk's compute proxy, made on first use (it discovers Nova's versions: used
        inside ``_translated`` only, so an unreachable Nova is a ``NovaError``)."""
        if self._proxy is None:
            self._proxy = self._conn.compute
        return self._proxy

    # -- connecting ----------------------------------------------------------------------------
    @classmethod
    def connect(cls, url: str, *, token: str = "admin", user_id: str | None = None,
                project_id: str | None = None, roles: tuple[str, ...] = (),
                timeout_s: float = 30.0, verify: bool | str = True, **kwargs: Any) -> NovaClient:
        """A client of the compute API at ``url`` (``https://nova.example:8774/v2.1``) without a
        service catalog: ``token`` is sent as ``X-Auth-Token`` (a Keystone token, or anything
        for a Nova without ``authtoken``); ``user_id``/``project_id``/``roles`` are sent as
        ``X-User-Id``/``X-Project-Id``/``X-Roles``, which only a Nova without ``authtoken``
        (the test harness) reads — Keystone's middleware replaces them."""
        _need_sdk()
        import openstack.connection
        from keystoneauth1 import session as ks_session
        from keystoneauth1 import token_endpoint

        headers = {}
        if user_id:
            headers["X-User-Id"] = user_id
        if project_id:
            headers["X-Project-Id"] = project_id
        if roles:
            headers["X-Roles"] = ",".join(roles)
        session = ks_session.Session(auth=token_endpoint.Token(url, token), verify=verify,
                                     timeout=timeout_s, additional_headers=headers)
        conn = openstack.connection.Connection(session=session, compute_endpoint_override=url,
                                               compute_api_version="2")
        return cls(conn, **kwargs)

    @classmethod
    def from_cloud(cls, cloud: str | None = None, **kwargs: Any) -> NovaClient:
        """A client of a real cloud: ``clouds.yaml`` entry ``cloud`` or the ``OS_*`` variables
        (keystoneauth authenticates and finds Nova in the catalog)."""
        _need_sdk()
        import openstack

        with _translated(f"connecting to cloud {cloud or '(OS_* variables)'}"):
            return cls(openstack.connect(cloud=cloud), **kwargs)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> NovaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- flavors -------------------------------------------------------------------------------
    def ensure_flavor(self, spec: FlavorSpec) -> str:
        """The id of ``spec``'s flavor, created (with its extra specs) when missing. A flavor
        with that id but other sizes, other values or extra keys raises ``Conflict`` (it would
        schedule differently); missing extra specs (a creator that stopped half-way) are
        added."""
        from openstack import exceptions as os_exc

        with _translated(f"flavor {spec.name}"):
            try:
                flavor = self._compute.get_flavor(spec.id)
            except os_exc.NotFoundException:
                try:
                    flavor = self._compute.create_flavor(
                        id=spec.id, name=spec.name, vcpus=spec.vcpus, ram=spec.ram,
                        disk=spec.disk, description=spec.description, is_public=True)
                except os_exc.ConflictException as exc:
                    try:  # a concurrent gpuplane created it meanwhile
                        flavor = self._compute.get_flavor(spec.id)
                    except os_exc.NotFoundException:
                        raise Conflict(f"cannot create flavor {spec.name}: {_message(exc)} "
                                       "(a flavor of that name but another id exists?)",
                                       code="gpuplane.openstack.flavor_conflict") from None
            sizes = (flavor.vcpus, flavor.ram, flavor.disk)
            if sizes != (spec.vcpus, spec.ram, spec.disk):
                raise Conflict(f"flavor {spec.id} exists with vcpus/ram/disk {sizes}, not "
                               f"{(spec.vcpus, spec.ram, spec.disk)}",
                               code="gpuplane.openstack.flavor_conflict")
            have = dict(flavor.extra_specs or {})
            wrong = {k: v for k, v in have.items() if spec.extra_specs.get(k) != v}
            if wrong:
                raise Conflict(f"flavor {spec.name} ({spec.id}) has other extra specs than "
                               f"gpuplane's: {wrong}; delete it and retry",
                               code="gpuplane.openstack.flavor_conflict")
            missing = {k: v for k, v in spec.extra_specs.items() if k not in have}
            if missing:
                self._compute.create_flavor_extra_specs(spec.id, missing)
        return spec.id

    # -- servers -------------------------------------------------------------------------------
    def create_server(self, name: str, flavor_id: str, image_id: str, *,
                      metadata: Mapping[str, str] | None = None,
                      availability_zone: str | None = None) -> str:
        """Boot ``name`` from ``image_id`` with no network; returns the server id at once
        (the server is BUILD; ``wait`` watches it). ``availability_zone`` ``nova:<host>``
        pins it to one compute host (an admin's right in Nova)."""
        attrs: dict[str, Any] = {"name": name, "flavor_id": flavor_id, "image_id": image_id,
                                 "networks": "none"}
        if metadata:
            attrs["metadata"] = dict(metadata)
        if availability_zone:
            attrs["availability_zone"] = availability_zone
        with _translated(f"creating server {name}"):
            return str(self._compute.create_server(**attrs).id)

    def server(self, server_id: str) -> ServerState:
        """``GET /servers/{id}``: the server's status, task state, host and fault."""
        with _translated(f"server {server_id}"):
            return self._state_of(self._compute.get_server(server_id))

    def servers(self, **filters: Any) -> list[ServerState]:
        """``GET /servers/detail`` with Nova's filters (``status="ERROR"``, ``name="^gp-"``,
        ``all_projects=True`` ...): the servers with status, host and fault."""
        with _translated("listing servers"):
            found = list(self._compute.servers(details=True, **filters))
        return [self._state_of(s) for s in found]

    @staticmethod
    def _state_of(s: Any) -> ServerState:
        fault = s.fault if isinstance(s.fault, Mapping) else None
        return ServerState(id=str(s.id), name=s.name or "", status=str(s.status or "UNKNOWN"),
                           task_state=s.task_state, host=s.compute_host or s.hypervisor_hostname,
                           flavor=s.flavor if isinstance(s.flavor, Mapping) else None,
                           fault=str(fault.get("message") or "") or None if fault else None)

    def state(self, server_id: str) -> ServerState | None:
        """The server's state, ``None`` once it is gone: ``GET /servers/{id}``, or the brief
        listing when Nova answers that with a 500 (no Neutron; see the module doc)."""
        if self.show_unavailable is None:
            try:
                return self.server(server_id)
            except NovaNotFound:
                return None
            except NovaError as exc:
                if exc.status is None or exc.status < 500:
                    raise
                self.show_unavailable = exc.detail
        return self._state_from_listing(server_id)

    def _listed(self, **query: Any) -> set[str]:
        with _translated("listing servers"):
            return {str(s.id) for s in self._compute.servers(details=False, **query)}

    def _state_from_listing(self, server_id: str) -> ServerState | None:
        for status in SETTLED:
            if server_id in self._listed(status=status):
                fault = self.action_fault(server_id) if status == "ERROR" else None
                return ServerState(id=server_id, status=status, fault=fault, via="list")
        if server_id in self._listed():
            return ServerState(id=server_id, status="BUILD", via="list")
        return None

    def action_fault(self, server_id: str) -> str | None:
        """The message of the latest failed instance action event (``details``, 2.84), e.g.
        ``No valid host was found.``; ``None`` when Nova recorded none."""
        with _translated(f"actions of server {server_id}"):
            actions = sorted(self._compute.server_actions(server_id),
                             key=lambda a: str(a.start_time or ""), reverse=True)
            for action in actions:
                if action.message != "Error":
                    continue
                full = self._compute.get_server_action(action.request_id, server_id,
                                                       ignore_missing=True)
                for event in (full.events if full else None) or []:
                    ev = event if isinstance(event, Mapping) else vars(event)
                    if ev.get("result") == "Error" and ev.get("details"):
                        return str(ev["details"]).strip()
                return f"{action.action} failed"
        return None

    def _delete_failed(self, st: ServerState) -> bool:
        """An ERROR server under deletion is still ``deleting`` (show) or its latest action is
        still running (listing); once Nova gave up, the task state is cleared and the latest
        action, the delete, says ``Error``."""
        if st.via == "show":
            return st.task_state is None
        with _translated(f"actions of server {st.id}"):
            latest = max(self._compute.server_actions(st.id),
                         key=lambda a: str(a.start_time or ""), default=None)
        return latest is not None and latest.action == "delete" and latest.message == "Error"

    def wait(self, server_id: str, *, until: tuple[str, ...] = SETTLED, timeout_s: float = 300.0,
             poll_s: float = 0.5) -> ServerState:
        """Watch ``server_id`` until its status is one of ``until``; raises ``WatchTimeout``
        (with the last status), ``NovaNotFound`` when it disappears."""
        deadline = self._clock() + timeout_s
        last = "unknown"
        while True:
            st = self.state(server_id)
            if st is None:
                raise NovaNotFound(f"server {server_id} disappeared while waiting for "
                                   f"{'/'.join(until)}")
            last = st.status
            if st.status in until:
                return st
            if self._clock() >= deadline:
                raise WatchTimeout(server_id, "/".join(until), last, timeout_s)
            self._sleep(poll_s)

    def boot(self, name: str, flavor: FlavorSpec, image_id: str, *, timeout_s: float = 300.0,
             metadata: Mapping[str, str] | None = None) -> ServerState:
        """Ensure the flavor, create the server, wait until ACTIVE. ERROR raises
        ``ServerFailed`` (the server is left for the caller to delete: ``exc.server_id``)."""
        flavor_id = self.ensure_flavor(flavor)
        server_id = self.create_server(name, flavor_id, image_id, metadata=metadata)
        st = self.wait(server_id, timeout_s=timeout_s)
        if st.status == "ERROR":
            reason = "no_valid_host" if _NO_VALID_HOST in (st.fault or "").lower() \
                else "build_failed"
            raise ServerFailed(server_id, reason, st.fault)
        return st

    def delete_server(self, server_id: str, *, wait: bool = True, timeout_s: float = 120.0,
                      poll_s: float = 0.5) -> None:
        """``DELETE /servers/{id}`` (a server already gone is fine); with ``wait``, until it
        is gone. A server that goes to ERROR instead raises ``ServerFailed(delete_failed)``."""
        with _translated(f"deleting server {server_id}"):
            self._compute.delete_server(server_id, ignore_missing=True)
        if not wait:
            return
        deadline = self._clock() + timeout_s
        while True:
            st = self.state(server_id)
            if st is None or st.status == "DELETED":
                return
            if st.status == "ERROR" and self._delete_failed(st):
                raise ServerFailed(server_id, "delete_failed", st.fault)
            if self._clock() >= deadline:
                raise WatchTimeout(server_id, "deletion", st.status, timeout_s)
            self._sleep(poll_s)
