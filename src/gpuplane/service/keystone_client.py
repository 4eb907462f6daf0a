"""The Keystone side of Keystone identity (docs/keystone.md): configuration from the settings,
the client that validates tokens (``GET /v3/auth/tokens``) with gpuplane's own service token,
what a validated token says (``TokenInfo``), and the in-memory cache of validated tokens. The
mapping to gpuplane's tenancy is ``service/keystone.py``."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from gpuplane.domain.errors import GpuplaneError
from gpuplane.service.authz import Principal, Unauthenticated

log = logging.getLogger("gpuplane.keystone")
CACHE_MAX_ENTRIES = 10_000
SERVICE_TOKEN_MARGIN_S = 120.0  # renew gpuplane's own token this long before it expires


class KeystoneUnavailable(GpuplaneError):
    """Keystone cannot answer whether a token is valid (down, slow, 5xx, or it refuses
    gpuplane's own credentials): 503, retry later; the caller's token is not judged."""

    def __init__(self, detail: str) -> None:
        super().__init__(code="gpuplane.keystone.unavailable", detail=detail)




@dataclass(frozen=True)
class KeystoneConfig:
    """What ``KeystoneService`` needs from the settings (see ``settings.py``, keystone_*)."""

    url: str  # ends with /v3
    cache_s: float = 60.0
    timeout_s: float = 5.0
    service_auth: dict[str, Any] | None = None  # the "auth" body of gpuplane's own token
    service_who: str = "the token itself"
    project_roles: dict[str, str] = field(default_factory=dict)
    domain_roles: dict[str, str] = field(default_factory=dict)
    global_scope: str | None = None
    global_roles: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Any) -> KeystoneConfig | None:  # noqa: ANN401
        """None when ``keystone_url`` is not set."""
        if not settings.keystone_url:
            return None
        url = settings.keystone_url.rstrip("/")
        if not url.endswith("/v3"):
            url += "/v3"
        secret = settings.keystone_application_credential_secret
        password = settings.keystone_password
        auth: dict[str, Any] | None = None
        who = "the token itself (no GPUPLANE_KEYSTONE_USERNAME or application credential)"
        if settings.keystone_application_credential_id:
            auth = {"identity": {"methods": ["application_credential"],
                                 "application_credential": {
                                     "id": settings.keystone_application_credential_id,
                                     "secret": secret.get_secret_value() if secret else ""}}}
            who = (f"application credential {settings.keystone_application_credential_id} "
                   "(GPUPLANE_KEYSTONE_APPLICATION_CREDENTIAL_ID)")
        elif settings.keystone_username:
            auth = {"identity": {"methods": ["password"], "password": {"user": {
                "name": settings.keystone_username,
                "domain": {"name": settings.keystone_user_domain_name},
                "password": password.get_secret_value() if password else ""}}}}
            if settings.keystone_project_name:
                auth["scope"] = {"project": {"name": settings.keystone_project_name, "domain": {
                    "name": settings.keystone_project_domain_name}}}
            who = (f"user {settings.keystone_username!r} of domain "
                   f"{settings.keystone_user_domain_name!r} (GPUPLANE_KEYSTONE_USERNAME)")
        return cls(url=url, cache_s=settings.keystone_cache_s,
                   timeout_s=settings.keystone_timeout_s, service_auth=auth, service_who=who,
                   project_roles=parse_role_map(settings.keystone_project_roles),
                   domain_roles=parse_role_map(settings.keystone_domain_roles),
                   global_scope=settings.keystone_global_scope or None,
                   global_roles=parse_role_map(settings.keystone_global_roles))


def parse_role_map(text: str) -> dict[str, str]:
    """``"admin=admin,reader=viewer"`` -> ``{"admin": "admin", "reader": "viewer"}`` (the
    settings validator has already refused malformed items)."""
    out: dict[str, str] = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        keystone, _, ours = item.partition("=")
        out[keystone.strip()] = ours.strip()
    return out


@dataclass(frozen=True)
class TokenInfo:
    """The parts of a validated Keystone token gpuplane uses."""

    user_id: str
    user_name: str
    user_domain_id: str
    user_domain_name: str
    scope: str  # project | domain | system
    scope_id: str  # project or domain id; "all" for system
    scope_name: str
    domain_id: str  # of the scoped project, or the scoped domain ("" for system)
    domain_name: str
    roles: tuple[str, ...]
    expires_at: float

    @classmethod
    def parse(cls, body: Any) -> TokenInfo:  # noqa: ANN401
        """From the body of ``GET /v3/auth/tokens``; Unauthenticated for an unscoped token."""
        try:
            tok = body["token"]
            user = tok["user"]
            expires = datetime.fromisoformat(tok["expires_at"].replace("Z", "+00:00"))
            roles = tuple(sorted({r["name"] for r in tok.get("roles") or []}))
            common = dict(user_id=user["id"], user_name=user["name"],
                          user_domain_id=user["domain"]["id"],
                          user_domain_name=user["domain"]["name"], roles=roles,
                          expires_at=expires.timestamp())
            if "project" in tok:
                p = tok["project"]
                return cls(scope="project", scope_id=p["id"], scope_name=p["name"],
                           domain_id=p["domain"]["id"], domain_name=p["domain"]["name"], **common)
            if "domain" in tok:
                d = tok["domain"]
                return cls(scope="domain", scope_id=d["id"], scope_name=d["name"],
                           domain_id=d["id"], domain_name=d["name"], **common)
            if "system" in tok:
                return cls(scope="system", scope_id="all", scope_name="system", domain_id="",
                           domain_name="", **common)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise KeystoneUnavailable(f"Keystone answered a token validation gpuplane cannot "
                                      f"read ({type(exc).__name__}: {exc})") from None
        raise Unauthenticated("the Keystone token is unscoped; ask Keystone for a "
                              "project-scoped token (e.g. set OS_PROJECT_NAME and "
                              "OS_PROJECT_DOMAIN_NAME) and send it as X-Auth-Token")


# -- names ------------------------------------------------------------------------------------


class KeystoneClient:
    """Validates tokens against one Keystone; keeps gpuplane's own token and renews it.
    Thread-safe. Never logs a token."""

    def __init__(self, config: KeystoneConfig, transport: httpx.BaseTransport | None = None,
                 clock: Any = None) -> None:  # noqa: ANN401
        import time

        self.config = config
        self._clock = clock or time.time
        self._http = httpx.Client(timeout=config.timeout_s, transport=transport,
                                  headers={"Accept": "application/json",
                                           "User-Agent": "gpuplane"})
        self._lock = threading.Lock()
        self._service_token: str | None = None
        self._service_until = 0.0

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:  # noqa: ANN401
        url = self.config.url + path
        try:
            resp = self._http.request(method, url, **kw)
        except httpx.TimeoutException:
            raise KeystoneUnavailable(f"Keystone at {self.config.url} did not answer within "
                                      f"{self.config.timeout_s:g} s "
                                      "(GPUPLANE_KEYSTONE_TIMEOUT_S); retry shortly") from None
        except httpx.HTTPError as exc:
            raise KeystoneUnavailable(f"cannot reach Keystone at {self.config.url} "
                                      f"({type(exc).__name__}); retry shortly, or check "
                                      "GPUPLANE_KEYSTONE_URL") from None
        if resp.status_code >= 500:
            raise KeystoneUnavailable(f"Keystone at {self.config.url} answered "
                                      f"{resp.status_code} to {method} {path}; retry shortly")
        return resp

    def service_token(self, renew: bool = False) -> str | None:
        """gpuplane's own token (None: tokens validate themselves)."""
        if self.config.service_auth is None:
            return None
        with self._lock:
            now = self._clock()
            if not renew and self._service_token and now < self._service_until:
                return self._service_token
            resp = self._send("POST", "/auth/tokens?nocatalog",
                              json={"auth": self.config.service_auth})
            if resp.status_code != 201 or "X-Subject-Token" not in resp.headers:
                raise KeystoneUnavailable(
                    f"Keystone at {self.config.url} refused gpuplane's own credentials, "
                    f"{self.config.service_who} (HTTP {resp.status_code}); an operator must "
                    "fix the GPUPLANE_KEYSTONE_* settings")
            try:
                until = TokenInfo.parse(resp.json()).expires_at
            except (GpuplaneError, ValueError):
                until = now + 300.0  # an unscoped service token still validates others
            self._service_token = resp.headers["X-Subject-Token"]
            self._service_until = max(now + 1.0, min(until - SERVICE_TOKEN_MARGIN_S,
                                                     now + 3600.0))
            return self._service_token

    def validate(self, token: str) -> dict[str, Any] | None:
        """The body of ``GET /v3/auth/tokens`` for ``token``; None when Keystone says the
        token is not valid (unknown, expired or revoked). KeystoneUnavailable otherwise."""
        service = self.service_token()
        for attempt in (1, 2):
            headers = {"X-Auth-Token": service or token, "X-Subject-Token": token}
            resp = self._send("GET", "/auth/tokens?nocatalog", headers=headers)
            if resp.status_code == 200:
                try:
                    return resp.json()
                except ValueError:
                    raise KeystoneUnavailable("Keystone answered a token validation that is "
                                              "not JSON") from None
            if resp.status_code in (400, 404):
                return None  # "Could not recognize Fernet token", "Failed to validate token"
            if resp.status_code == 401:
                if service is None:  # the token could not even authenticate itself
                    return None
                if attempt == 1:
                    service = self.service_token(renew=True)  # ours expired or was revoked
                    continue
                raise KeystoneUnavailable(f"Keystone refused gpuplane's own token from "
                                          f"{self.config.service_who} (HTTP 401); an operator "
                                          "must fix the GPUPLANE_KEYSTONE_* settings")
            if resp.status_code == 403:
                raise KeystoneUnavailable(
                    f"Keystone does not let {self.config.service_who} validate tokens (403); "
                    "give that user the `service` role (or `admin`) on its project")
            break
        raise KeystoneUnavailable(f"Keystone answered {resp.status_code} to a token "
                                  "validation; retry shortly")


class TokenCache:
    """Principals of validated tokens by SHA-256 of the token, each until its deadline.
    Thread-safe, bounded (oldest entries go first)."""

    def __init__(self, max_entries: int = CACHE_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    @staticmethod
    def key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def get(self, key: str, now: float) -> Principal | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if now >= item[0]:
                del self._items[key]
                return None
            return item[1]

    def put(self, key: str, until: float, principal: Principal) -> None:
        with self._lock:
            self._items[key] = (until, principal)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


# -- the service ----------------------------------------------------------------------------
