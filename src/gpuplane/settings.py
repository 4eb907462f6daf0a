"""The one typed settings object of gpuplane (``GPUPLANE_*`` environment variables + flags).

Read once at start-up (``Settings()``) and passed down; nothing else reads the environment.
Paths are derived on access from ``home`` so a test can point ``home`` at a temporary directory
and every derived path follows. See docs/api.md ("Configuration reference") for the table.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration of a gpuplane process. Every field maps to ``GPUPLANE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="GPUPLANE_", extra="ignore", validate_default=True)

    home: Path = Field(Path(".gpuplane"),
                       description="State directory: SQLite file, admin-token, task logs.")
    db_url: str | None = Field(None, description=(
        "SQLAlchemy URL of the database, e.g. postgresql+psycopg://u:p@host:5432/gpuplane. "
        "Default: SQLite (WAL) at $GPUPLANE_HOME/gpuplane.db."))
    url: str = Field("http://127.0.0.1:8080", description="Where clients reach the API.")
    token: str | None = Field(None, description="Bearer token clients send (CLI, client).")
    bind_host: str = Field("127.0.0.1", description="Address `gpuplane up` listens on.")
    bind_port: int = Field(8080, ge=0, le=65535, description="Port `gpuplane up` listens on.")
    max_body_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576,
                                description="Largest accepted request body in bytes (413 above).")
    page_size_default: int = Field(50, ge=1, le=1000, description="Items per page when none asked.")
    nova_url: str | None = Field(None, description=(
        "Nova compute endpoint; when set, `gpuplane up` wires the `nova` driver (hosts with "
        "driver: nova run each task as a Nova server)."))
    nova_token: str = Field("admin", description="Token sent to Nova (X-Auth-Token).")
    nova_image: str | None = Field(None, description="Image id Nova servers of tasks boot from.")
    nova_project_id: str | None = Field(None, description="X-Project-Id header sent to Nova.")
    nova_user_id: str | None = Field(None, description="X-User-Id header sent to Nova.")
    page_size_max: int = Field(500, ge=1, le=10_000, description="Largest page a client may ask for.")
    lease_ttl_s: float = Field(15.0, gt=0, le=3600,
                               description="Scheduler leader lease lifetime; renewed at ttl/3.")
    cycle_interval_s: float = Field(1.0, gt=0, le=3600,
                                    description="Seconds between scheduling cycles.")
    history_interval_s: float = Field(10.0, ge=0.1, le=3600, description=(
        "Seconds between the samples of the pool the console charts (`gpuplane up`)."))
    history_points: int = Field(360, ge=2, le=100_000, description=(
        "Samples of the console's history kept in memory (the oldest are dropped)."))
    preempt_grace_s: float = Field(30.0, ge=0, le=86400,
                                   description="Seconds a preempted task gets after SIGTERM to "
                                               "checkpoint and exit before it is killed.")
    auth_fail_limit: int = Field(10, ge=1, le=1_000_000,
                                 description="Failed authentications one source address may "
                                             "make per window before it gets 429.")
    auth_fail_window_s: float = Field(60.0, gt=0, le=86400,
                                      description="Window of auth_fail_limit, in seconds.")
    auth_throttle_delay_s: float = Field(1.0, ge=0, le=60,
                                         description="A throttled source's 429 is sent after "
                                                     "this delay (at most its Retry-After), "
                                                     "so a client that ignores Retry-After is "
                                                     "slowed down; no thread is held.")
    log_follow_per_user: int = Field(4, ge=1, le=10_000,
                                     description="Concurrent `logs?follow=true` streams per "
                                                 "user (all its tokens together); 429 above.")
    log_follow_max: int = Field(32, ge=1, le=100_000,
                                description="Concurrent follow streams per API process; 429 "
                                            "above.")
    log_follow_idle_s: float = Field(300.0, gt=0, le=86400,
                                     description="A follow stream ends after this many seconds "
                                                 "without new log bytes.")
    log_follow_max_s: float = Field(3600.0, gt=0, le=7 * 86400,
                                    description="A follow stream ends after this many seconds.")
    trusted_proxies: str = Field("", description=(
        "Comma-separated addresses of reverse proxies whose X-Forwarded-For `gpuplane up` "
        "believes (uvicorn's forwarded_allow_ips). Empty: the header is ignored and the peer "
        "address is the source that failed logins are throttled by."))
    demo: bool = Field(True, description="`gpuplane up` loads the demo fleet.")
    log_level: str = Field("info", description="Log level of the server process.")
    unsandboxed: bool = Field(False, description=(
        "`gpuplane up --unsandboxed`: run local tasks of every project without bubblewrap, "
        "as the server's user; the host, each task's start event and audit say so. Without "
        "it and without bubblewrap only the `default` project's tasks run."))
    task_uid_base: int = Field(200_000, ge=1000, le=2**31 - 2**24, description=(
        "First uid of the range a root-run server runs local tasks as (one uid per project: "
        "base + the project id, below task_uid_count; gid = uid)."))
    task_uid_count: int = Field(65_536, ge=1, le=2**24,
                                description="Size of the task uid range.")
    audit_key_file: Path | None = Field(None, description=(
        "Ed25519 private key (PEM) that signs audit checkpoints; kept outside the database. "
        "Default: $GPUPLANE_HOME/audit-key.pem, created with mode 0600 on first use."))
    audit_origin: str | None = Field(None, max_length=200, pattern=r"^[^\s+]+$", description=(
        "The audit log's name in its checkpoints. Default: gpuplane/<key id>, kept in the "
        "database from the first checkpoint on (and across an export/import)."))
    audit_checkpoint_interval_s: float = Field(300.0, gt=0, le=86400, description=(
        "Seconds between signed audit checkpoints (the leader signs one when the log grew, "
        "and one at a graceful shutdown)."))
    audit_witnesses: str = Field("", description=(
        "Comma-separated witnesses that cosign each checkpoint, each NAME=URL=VERIFIER_KEY "
        "(C2SP tlog-witness add-checkpoint endpoint; e.g. another gpuplane's "
        "/witness/add-checkpoint). Empty: none."))
    audit_tsa_url: str | None = Field(None, description=(
        "RFC 3161 time-stamping authority that timestamps each checkpoint (optional)."))
    # -- OpenStack Placement (docs/openstack.md) -------------------------------------------------
    placement_url: str | None = Field(None, pattern=r"^https?://\S+$", description=(
        "OpenStack Placement endpoint the leader keeps converged on gpuplane's inventory "
        "(every placement_sync_interval_s, audited as openstack.sync), e.g. "
        "http://placement.example:8778. Empty: off. The same variable is the default "
        "--placement-url of `gpuplane openstack`."))
    placement_token: SecretStr = Field(SecretStr("admin"), description=(
        "X-Auth-Token sent to Placement: a Keystone token of gpuplane's service user (roles "
        "admin and service), or `admin`, the noauth2 admin token of a test Placement."))
    placement_sync_interval_s: float = Field(60.0, gt=0, le=86400, description=(
        "Seconds between the leader's Placement syncs (one also runs when a process becomes "
        "the leader); drift made behind gpuplane's back is repaired within one interval."))
    # -- Keystone as identity (docs/keystone.md) -----------------------------------------------
    keystone_url: str | None = Field(None, pattern=r"^https?://\S+$", description=(
        "Keystone identity endpoint, e.g. https://keystone.example:5000/v3 (/v3 is added when "
        "missing). Set: requests with `X-Auth-Token` are validated there. Empty: Keystone "
        "tokens are refused; bearer tokens work either way."))
    keystone_cache_s: float = Field(60.0, ge=0, le=3600, description=(
        "Seconds a validated Keystone token is trusted before Keystone is asked again (never "
        "beyond the token's own expiry): a token revoked in Keystone is refused at most this "
        "long after. 0: ask Keystone on every request."))
    keystone_timeout_s: float = Field(5.0, gt=0, le=120, description=(
        "Timeout of one request to Keystone, in seconds; beyond it the API answers 503."))
    keystone_username: str | None = Field(None, description=(
        "gpuplane's own Keystone user, whose token validates users' tokens (needs the `service` "
        "or `admin` role). Unset, and no application credential: each token validates "
        "itself (Keystone's token_subject rule)."))
    keystone_password: SecretStr | None = Field(None, description=(
        "Password of keystone_username."))
    keystone_user_domain_name: str = Field("Default", description=(
        "Keystone domain of keystone_username."))
    keystone_project_name: str | None = Field(None, description=(
        "Keystone project gpuplane's own token is scoped to (e.g. `service`)."))
    keystone_project_domain_name: str = Field("Default", description=(
        "Keystone domain of keystone_project_name."))
    keystone_application_credential_id: str | None = Field(None, description=(
        "Instead of user and password: the id of gpuplane's Keystone application credential."))
    keystone_application_credential_secret: SecretStr | None = Field(None, description=(
        "Secret of keystone_application_credential_id."))
    keystone_project_roles: str = Field(
        "admin=admin,manager=admin,member=member,reader=viewer", description=(
            "Keystone role on a project = gpuplane role on the mapped project, comma-separated; "
            "roles not listed give nothing. Never a global role: see keystone_global_scope."))
    keystone_domain_roles: str = Field(
        "admin=admin,manager=admin,member=member,reader=viewer", description=(
            "The same for domain-scoped tokens: Keystone role on a domain = gpuplane role on "
            "the mapped organisation. Empty: domain-scoped tokens give no role."))
    keystone_global_scope: str | None = Field(None, description=(
        "The Keystone scope whose roles become gpuplane *global* roles (keystone_global_roles): "
        "a project as DOMAIN/PROJECT names (e.g. Default/admin) or a project id, or `system` "
        "for system-scoped tokens. Unset: no Keystone token ever gets a global role."))
    keystone_global_roles: str = Field("admin=admin,reader=auditor", description=(
        "Keystone role in keystone_global_scope = gpuplane global role, comma-separated "
        "(e.g. admin=admin,gpuplane-operator=operator,reader=auditor)."))

    @field_validator("keystone_project_roles", "keystone_domain_roles", "keystone_global_roles")
    @classmethod
    def _role_map(cls, value: str) -> str:
        roles = ("admin", "operator", "member", "viewer", "auditor")
        for item in filter(None, (i.strip() for i in value.split(","))):
            keystone, sep, ours = (p.strip() for p in item.partition("="))
            if not sep or not keystone or ours not in roles:
                raise ValueError(f"{item!r} is not KEYSTONE_ROLE=GPUPLANE_ROLE with GPUPLANE_ROLE "
                                 f"one of {', '.join(roles)}")
        return value

    @property
    def audit_key_path(self) -> Path:
        return self.audit_key_file or self.home / "audit-key.pem"

    @property
    def database_url(self) -> str:
        """The effective database URL (``db_url`` or the SQLite file under ``home``)."""
        if self.db_url:
            return self.db_url
        return f"sqlite:///{(self.home / 'gpuplane.db').resolve()}"

    @property
    def admin_token_path(self) -> Path:
        return self.home / "admin-token"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"
