"""A small httpx client for the gpuplane REST API (used by the CLI, tests and scripts).

Every non-2xx answer becomes a domain error (``gpuplane.domain.errors``) built from the RFC 9457
problem+json body, so callers handle API errors exactly like local ones: ``code`` is the stable
error code, ``errors`` the field paths at fault. Transport failures become
``GpuplaneError("gpuplane.client.unreachable", ...)``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gpuplane.domain.errors import Conflict, FieldError, GpuplaneError, InvalidInput, NotFound

DEFAULT_URL = "http://127.0.0.1:8080"


def error_from_problem(status: int, body: Any, fallback: str = "") -> GpuplaneError:
    """Build the domain error an RFC 9457 problem body describes."""
    body = body if isinstance(body, Mapping) else {}
    code = str(body.get("code") or f"gpuplane.http.{status}")
    detail = str(body.get("detail") or body.get("title") or fallback or f"HTTP {status}")
    errors = [FieldError(str(e.get("loc", "")), str(e.get("msg", "")))
              for e in body.get("errors") or [] if isinstance(e, Mapping)]
    if status == 404:
        err: GpuplaneError = NotFound(detail, code=code)
    elif status == 409:
        err = Conflict(detail, code=code)
    elif status in (400, 413, 422):
        err = InvalidInput(detail, errors, code=code)
    else:
        err = GpuplaneError(code=code, detail=detail, errors=errors)
    err.status = status  # type: ignore[attr-defined]
    return err


class Client:
    """Talks to one gpuplane server. ``token`` is a bearer token (``GPUPLANE_TOKEN``); else
    ``keystone_token`` is sent as ``X-Auth-Token``, ``auth_source`` saying where its
    credentials came from (for error messages; see ``keystone_login_from_env``)."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None, *,
                 keystone_token: str | None = None, auth_source: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.auth_source = auth_source
        self.keystone = bool(keystone_token) and not token
        headers = {"Accept": "application/json, application/problem+json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif keystone_token:
            headers["X-Auth-Token"] = keystone_token
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -----------------------------------------------------------
    def request(self, method: str, path: str, *, json: Any = None,
                params: Mapping[str, Any] | None = None) -> httpx.Response:
        """Send one request; raise the matching domain error on a non-2xx answer."""
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            resp = self._http.request(method, path, json=json, params=clean)
        except httpx.TimeoutException as exc:
            raise GpuplaneError("gpuplane.client.timeout",
                                f"{method} {self.url}{path} timed out ({exc})") from None
        except httpx.HTTPError as exc:
            raise GpuplaneError("gpuplane.client.unreachable",
                                f"cannot reach gpuplane at {self.url} ({exc}); is `gpuplane up` "
                                "running, and is GPUPLANE_URL right?") from None
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = None
            err = error_from_problem(resp.status_code, body, resp.text[:200])
            if resp.status_code == 401 and self.keystone:
                err.detail += (f" (server {self.url}; the Keystone token was obtained with "
                               f"{self.auth_source})")
            elif resp.status_code == 401 and self.auth_source:
                err.detail += f" (server {self.url}; token from {self.auth_source})"
            elif resp.status_code == 401 and "GPUPLANE_TOKEN" not in err.detail:
                err.detail += f" (server {self.url}; set GPUPLANE_TOKEN or pass --token)"
            raise err
        return resp

    def get_json(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params).json()

    def post_json(self, path: str, body: Any, **params: Any) -> Any:
        resp = self.request("POST", path, json=body, params=params)
        return resp.json() if resp.content else None

    def put_json(self, path: str, body: Any) -> Any:
        resp = self.request("PUT", path, json=body)
        return resp.json() if resp.content else None

    def delete(self, path: str) -> Any:
        resp = self.request("DELETE", path)
        return resp.json() if resp.content else None

    def paginate(self, path: str, limit: int = 500, **params: Any) -> Iterator[dict[str, Any]]:
        """Yield every item of a paginated list (``{"items": [...], "next": cursor}``)."""
        cursor = None
        while True:
            page = self.get_json(path, limit=limit, cursor=cursor, **params)
            if isinstance(page, list):
                yield from page
                return
            yield from page.get("items", [])
            cursor = page.get("next") or page.get("next_cursor")
            if not cursor:
                return

    def stream(self, path: str, **params: Any) -> Iterator[bytes]:
        """GET ``path`` and yield the body as it arrives (for ``logs -f``); no read timeout."""
        clean = {k: v for k, v in params.items() if v is not None}
        try:
            with self._http.stream("GET", path, params=clean,
                                   timeout=httpx.Timeout(10.0, read=None)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    try:
                        body = resp.json()
                    except ValueError:
                        body = None
                    raise error_from_problem(resp.status_code, body, resp.text[:200])
                yield from resp.iter_bytes()
        except httpx.HTTPError as exc:
            raise GpuplaneError("gpuplane.client.unreachable",
                                f"lost the connection to {self.url} ({exc})") from None

    # -- health --------------------------------------------------------------
    def healthz(self) -> dict[str, Any]:
        return self.get_json("/healthz")

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Poll ``/healthz`` until it answers 200 (raises the last error on timeout)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.healthz()
                return
            except GpuplaneError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


# -- Keystone credentials (OS_* variables, clouds.yaml) ----------------------------------------
#: the keystoneauth option names gpuplane understands, as clouds.yaml spells them under auth:
#: (as environment variables: OS_ + upper case)
KEYSTONE_OPTIONS = ("auth_url", "username", "user_id", "password", "user_domain_name",
                    "user_domain_id", "project_name", "project_id", "project_domain_name",
                    "project_domain_id", "domain_name", "domain_id", "system_scope",
                    "application_credential_id", "application_credential_name",
                    "application_credential_secret", "token")


@dataclass(frozen=True)
class KeystoneLogin:
    """How to get a Keystone token: ``POST {auth_url}/auth/tokens`` with ``body``, or a
    ready ``token``. ``source`` says where the values came from (for error messages)."""

    source: str
    auth_url: str | None = None
    body: dict[str, Any] | None = None
    token: str | None = None
    who: str = ""
    verify: bool | str = True


def keystone_login_from_env(environ: Mapping[str, str] | None = None) -> KeystoneLogin | None:
    """The Keystone login the usual OpenStack client settings describe: ``OS_CLOUD`` (a
    cloud of clouds.yaml, with secure.yaml merged in), else ``OS_AUTH_URL`` / ``OS_TOKEN`` and
    the other ``OS_*`` variables (password, token and application-credential auth types).
    None when none of them is set. InvalidInput naming the missing variables or keys."""
    env = os.environ if environ is None else environ
    if env.get("OS_CLOUD"):
        return _login_from_cloud(env["OS_CLOUD"], env)
    if not (env.get("OS_AUTH_URL") or env.get("OS_TOKEN")):
        return None
    opts = {k: env[f"OS_{k.upper()}"] for k in KEYSTONE_OPTIONS if env.get(f"OS_{k.upper()}")}
    opts.setdefault("project_name", env.get("OS_TENANT_NAME", ""))
    opts.setdefault("project_id", env.get("OS_TENANT_ID", ""))
    source = "the OS_* environment variables"
    if opts.get("auth_url"):
        source += f" (OS_AUTH_URL={opts['auth_url']})"
    verify: bool | str = env.get("OS_CACERT") or env.get("OS_INSECURE", "").lower() not in (
        "1", "true", "yes")
    return _login(opts, env.get("OS_AUTH_TYPE", ""), source, verify, lambda k: f"OS_{k.upper()}")


def _clouds_files(env: Mapping[str, str], kind: str) -> list[Path]:
    explicit = env.get("OS_CLIENT_CONFIG_FILE" if kind == "clouds" else "OS_CLIENT_SECURE_FILE")
    found = [Path(explicit)] if explicit else []
    return found + [Path.cwd() / f"{kind}.yaml",
                    Path.home() / ".config" / "openstack" / f"{kind}.yaml",
                    Path("/etc/openstack") / f"{kind}.yaml"]


def _read_cloud(path: Path, cloud: str) -> dict[str, Any] | None:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}", [FieldError(str(path), str(exc))]
                           ) from None
    clouds = doc.get("clouds") if isinstance(doc, dict) else None
    entry = clouds.get(cloud) if isinstance(clouds, dict) else None
    return entry if isinstance(entry, dict) else None


def _login_from_cloud(cloud: str, env: Mapping[str, str]) -> KeystoneLogin:
    path, entry = None, None
    for candidate in _clouds_files(env, "clouds"):
        entry = _read_cloud(candidate, cloud)
        if entry is not None:
            path = candidate
            break
    if entry is None or path is None:
        tried = ", ".join(str(p) for p in _clouds_files(env, "clouds"))
        raise InvalidInput(f"no cloud {cloud!r} (OS_CLOUD) in any clouds.yaml; looked in {tried}",
                           [FieldError("OS_CLOUD", f"{cloud!r} is not defined")])
    auth = dict(entry.get("auth") or {})
    for candidate in _clouds_files(env, "secure"):
        secret = _read_cloud(candidate, cloud)
        if secret is not None:
            auth.update(secret.get("auth") or {})
            break
    opts = {k: str(auth[k]) for k in KEYSTONE_OPTIONS if auth.get(k)}
    verify: bool | str = entry.get("cacert") or bool(entry.get("verify", True))
    return _login(opts, str(entry.get("auth_type") or ""), f"cloud {cloud!r} of {path}", verify,
                  lambda k: f"clouds.{cloud}.auth.{k}")


def _login(opts: dict[str, str], auth_type: str, source: str, verify: bool | str,
           name: Any) -> KeystoneLogin:  # noqa: ANN401
    """Build the ``POST /v3/auth/tokens`` body; ``name(key)`` spells a key for messages."""
    kind = auth_type.lower().removeprefix("v3").replace("_", "") or (
        "applicationcredential" if opts.get("application_credential_id") else
        "token" if opts.get("token") and not opts.get("password") else "password")
    if kind == "token" and not opts.get("auth_url"):
        return KeystoneLogin(source, token=opts.get("token"), who="a ready token",
                             verify=verify)
    missing: list[FieldError] = []
    if not opts.get("auth_url"):
        missing.append(FieldError(name("auth_url"), "required: Keystone's identity URL"))
    user: dict[str, Any] = ({"id": opts["user_id"]} if opts.get("user_id") else
                            {"name": opts.get("username", ""), "domain": (
                                {"name": opts["user_domain_name"]}
                                if opts.get("user_domain_name") else
                                {"id": opts.get("user_domain_id") or "default"})})
    who = f"user {opts.get('username') or opts.get('user_id') or '?'}"
    if kind == "password":
        if not (opts.get("username") or opts.get("user_id")):
            missing.append(FieldError(name("username"), "required for password authentication"))
        if not opts.get("password"):
            missing.append(FieldError(name("password"), "required for password authentication"))
        identity: dict[str, Any] = {"methods": ["password"], "password": {
            "user": {**user, "password": opts.get("password", "")}}}
    elif kind == "applicationcredential":
        cred: dict[str, Any] = {"secret": opts.get("application_credential_secret", "")}
        if opts.get("application_credential_id"):
            cred["id"] = opts["application_credential_id"]
            who = f"application credential {opts['application_credential_id']}"
        else:
            cred.update(name=opts.get("application_credential_name", ""), user=user)
            who = f"application credential {opts.get('application_credential_name', '?')}"
        if not opts.get("application_credential_secret"):
            missing.append(FieldError(name("application_credential_secret"),
                                      "required for application-credential authentication"))
        identity = {"methods": ["application_credential"], "application_credential": cred}
    elif kind == "token":
        identity = {"methods": ["token"], "token": {"id": opts.get("token", "")}}
        who = "a token"
    else:
        raise InvalidInput(f"unsupported Keystone auth type {auth_type!r} (from {source})",
                           [FieldError(name("auth_type"), "use password, token or "
                                       "v3applicationcredential")])
    if missing:
        raise InvalidInput(f"incomplete Keystone credentials in {source}", missing)
    body: dict[str, Any] = {"identity": identity}
    if kind != "applicationcredential":  # an application credential carries its own scope
        if opts.get("project_id"):
            body["scope"] = {"project": {"id": opts["project_id"]}}
        elif opts.get("project_name"):
            body["scope"] = {"project": {"name": opts["project_name"], "domain": (
                {"name": opts["project_domain_name"]} if opts.get("project_domain_name")
                else {"id": opts.get("project_domain_id") or "default"})}}
        elif opts.get("domain_id") or opts.get("domain_name"):
            body["scope"] = {"domain": {"id": opts["domain_id"]} if opts.get("domain_id")
                             else {"name": opts["domain_name"]}}
        elif opts.get("system_scope"):
            body["scope"] = {"system": {"all": True}}
    scope = opts.get("project_name") or opts.get("project_id")
    if scope:
        who += f", project {scope}"
    url = opts["auth_url"].rstrip("/")
    return KeystoneLogin(source, url if url.endswith("/v3") else url + "/v3", {"auth": body},
                         who=who, verify=verify)


def keystone_token(login: KeystoneLogin, timeout: float = 30.0,
                   transport: httpx.BaseTransport | None = None) -> str:
    """A token for ``login``: its ready token, or one ``POST /v3/auth/tokens``. Errors say
    which Keystone answered what, and where the credentials came from."""
    if login.token:
        return login.token
    assert login.auth_url and login.body
    try:
        with httpx.Client(timeout=timeout, transport=transport, verify=login.verify) as http:
            resp = http.post(login.auth_url + "/auth/tokens?nocatalog", json=login.body)
    except httpx.HTTPError as exc:
        raise GpuplaneError("gpuplane.client.keystone_unreachable",
                            f"cannot reach Keystone at {login.auth_url} ({exc}); check the URL "
                            f"in {login.source}") from None
    token = resp.headers.get("X-Subject-Token")
    if resp.status_code == 201 and token:
        return token
    try:
        message = resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = resp.text[:200]
    if resp.status_code == 401:
        detail = (f"Keystone at {login.auth_url} refused the credentials of {login.who} from "
                  f"{login.source}: {message}")
    else:
        detail = (f"Keystone at {login.auth_url} answered {resp.status_code} to the login of "
                  f"{login.who} from {login.source}: {message}")
    err = GpuplaneError("gpuplane.client.keystone_refused", detail)
    err.status = resp.status_code  # type: ignore[attr-defined]
    raise err
