"""Authentication: API tokens (stored hashed), principals, and the bootstrap admin.

Tokens look like ``gpp_<43 url-safe characters>`` (256 random bits). Only their SHA-256 is
stored: with that much entropy a fast hash is as safe as a slow one and lets every request be
checked with one indexed lookup. The clear token is shown once, when created.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import threading

from gpuplane.domain.errors import InvalidInput, TooManyRequests
from gpuplane.service.authz import Grant, Principal, Unauthenticated
from gpuplane.service.base import ServiceBase
from gpuplane.service.login_failures import FailedLogins, FailureRow, source_key
from gpuplane.store.records import ApiToken

log = logging.getLogger("gpuplane.auth")
TOKEN_PREFIX = "gpp_"
DEFAULT_PRIORITY_CLASSES = (
    ("production", 1000, False, False, "Serving and deadlines; never preempted by lower classes."),
    ("standard", 500, False, True, "The default for most work."),
    ("preemptible", 100, True, False, "Opportunistic work that may be stopped at any time."),
)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class AuthService(ServiceBase):
    _TOUCH_EVERY_S = 60.0

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.failures = FailedLogins()
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()

    def authenticate(self, token: str | None, source: str | None = None) -> Principal:
        """The principal of a bearer token. Failures raise Unauthenticated and are audited
        (``auth.login_failed``) without the token itself.

        ``source`` is the caller's address (the API passes the peer address): failures are
        then throttled and audited in aggregate per source (``login_failures``), and a
        throttled source gets TooManyRequests before its token is looked at. Without a source
        (in-process callers) every failure is audited on its own."""
        now = self.now()
        if not token:
            raise Unauthenticated()
        key = None if source is None else source_key(source)
        if key is not None:
            self.check_source(key, now)
        with self.store.read() as tx:
            found = tx.tokens.by_hash(hash_token(token))
            rec, disabled = found or (None, False)
            reason = None
            if rec is None:
                reason = "unknown token"
            elif rec.revoked_at is not None:
                reason = "revoked token"
            elif rec.expires_at is not None and rec.expires_at <= now:
                reason = "expired token"
            elif disabled:
                reason = "disabled user"
            if reason is None:
                principal = Principal(rec.user_id, rec.user,
                                      tuple(Grant(*g) for g in tx.users.grants(rec.user_id)))
                stale = rec.last_used_at is None or now - rec.last_used_at > self._TOUCH_EVERY_S
        if reason is not None:
            if key is not None:
                self.write_failures(self.failures.failed(
                    key, reason, None if rec is None else rec.user, now))
            else:
                with self.store.write() as tx:
                    self.audit(tx, "anonymous" if rec is None else rec.user,
                               "auth.login_failed", "token", "-" if rec is None else rec.prefix,
                               outcome="denied", detail={"reason": reason})
            raise Unauthenticated(f"{reason}; send a valid 'Authorization: Bearer <token>'")
        if stale:
            with self.store.write() as tx:
                tx.tokens.touch(rec.id, now)
        return principal

    def check_source(self, key: str, now: float | None = None) -> None:
        """Raise TooManyRequests if source ``key`` (see ``source_key``) is throttled. No
        database access except, once a minute, the aggregated audit row."""
        wait, row = self.throttle(key, now)
        self.write_failures(row)
        if wait is not None:
            raise self.throttled_error(key, wait)

    def throttle(self, key: str, now: float | None = None
                 ) -> tuple[float | None, FailureRow | None]:
        """In memory only: seconds ``key`` must wait (None: not throttled; a throttled
        attempt is counted) and an aggregated row that is due (write it with
        ``write_failures``). The API calls this on the event loop."""
        return self.failures.check(key, self.now() if now is None else now)

    @staticmethod
    def throttled_error(key: str, wait: float) -> TooManyRequests:
        return TooManyRequests(f"too many failed authentications from {key}; retry after "
                               f"{max(1, math.ceil(wait))} s", wait,
                               code="gpuplane.auth.throttled")

    def flush_failed_logins(self, *, everything: bool = False) -> int:
        """Write the aggregated rows that are due (all pending counts with ``everything``);
        returns how many rows were written."""
        rows = self.failures.drain() if everything else self.failures.due(self.now())
        for i, row in enumerate(rows):
            try:
                self.write_failures(row)
            except Exception:
                for rest in rows[i + 1:]:  # keep the counts for the next try
                    self.failures.restore(rest)
                raise
        return len(rows)

    def start_flusher(self, interval_s: float = 5.0) -> None:
        """Flush due rows every ``interval_s`` in a daemon thread (the API starts it)."""
        if self._flusher is not None:
            return
        self._stop.clear()

        def run() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.flush_failed_logins()
                except Exception:  # noqa: BLE001 - keep flushing; the row was restored
                    log.warning("could not write failed-login audit rows", exc_info=True)

        self._flusher = threading.Thread(target=run, name="gpuplane-login-audit", daemon=True)
        self._flusher.start()

    def stop_flusher(self) -> None:
        """Stop the flusher and write every pending count (shutdown)."""
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(timeout=10)
            self._flusher = None
        try:
            self.flush_failed_logins(everything=True)
        except Exception:  # noqa: BLE001 - shutting down: say what is lost, do not crash
            log.warning("could not write %d failed-login counts at shutdown",
                        self.failures.pending(), exc_info=True)

    def write_failures(self, row: FailureRow | None) -> None:
        if row is None:
            return
        try:
            with self.store.write() as tx:
                self.audit(tx, "anonymous", "auth.login_failed", "source", row.source,
                           outcome="denied", detail=row.detail)
        except Exception:
            self.failures.restore(row)
            raise

    def token_is_valid(self, token: str) -> bool:
        """True if ``token`` authenticates (used by ``gpuplane up`` to keep an admin-token)."""
        try:
            self.authenticate(token)
            return True
        except Unauthenticated:
            return False

    def issue_token(self, tx, user_id: int, name: str, expires_in_s: float | None  # noqa: ANN001
                    ) -> tuple[ApiToken, str]:
        """Create a token in ``tx``; returns its record and the clear token (shown once)."""
        if expires_in_s is not None and expires_in_s <= 0:
            raise InvalidInput("expires_in_s must be positive",
                               [])
        token = new_token()
        now = self.now()
        rec = tx.tokens.add(user_id, name, token[:len(TOKEN_PREFIX) + 6], hash_token(token), now,
                            None if expires_in_s is None else now + expires_in_s)
        return rec, token

    def bootstrap_admin(self, admin_name: str = "admin", *, new_token_if_exists: bool = False
                        ) -> str | None:
        """Create the first admin (global admin role), the ``default`` organisation and project,
        and the default priority classes, on an empty database; return the admin's token.

        Idempotent: on a database that already has users it returns None, unless
        ``new_token_if_exists`` asks for a fresh token for ``admin_name`` (when the saved
        admin-token was lost). The caller writes the token to $GPUPLANE_HOME/admin-token."""
        from gpuplane.domain.errors import Conflict

        try:
            return self._bootstrap(admin_name, new_token_if_exists)
        except Conflict:
            # another process bootstrapped the same empty database at the same moment
            return self._bootstrap(admin_name, new_token_if_exists)

    def _bootstrap(self, admin_name: str, new_token_if_exists: bool) -> str | None:
        now = self.now()
        with self.store.write() as tx:
            if tx.users.count() > 0:
                if not new_token_if_exists:
                    return None
                user = tx.users.get(admin_name)
                _, token = self.issue_token(tx, user.id, "bootstrap", None)
                self.audit(tx, "system", "token.create", "user", admin_name,
                           detail={"name": "bootstrap"})
                return token
            org = tx.orgs.add("default", "Default organisation", now)
            tx.projects.add("default", org.id, "Default project", 1.0, None, now)
            user = tx.users.add(admin_name, "", None, now)
            tx.users.bind(user.id, "admin", "global", 0, now)
            for name, value, preemptible, is_default, desc in DEFAULT_PRIORITY_CLASSES:
                tx.priorities.add(name, value, preemptible, is_default, desc, now)
            _, token = self.issue_token(tx, user.id, "bootstrap", None)
            self.audit(tx, "system", "bootstrap", "user", admin_name,
                       detail={"organisation": "default", "project": "default"})
            return token
