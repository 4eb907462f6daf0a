"""Alembic migrations, run at start-up (``Store.migrate``) and in tests.

The scripts live in ``store/alembic/versions``; ``env.py`` takes the connection we pass, so no
``alembic.ini`` is needed at run time. On PostgreSQL an advisory lock makes two processes that
start together migrate one after the other (the second finds nothing to do).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Engine

SCRIPT_LOCATION = str(Path(__file__).parent / "alembic")
_PG_LOCK_KEY = 0x67707570  # "gpup"


def alembic_config(connection=None) -> Config:  # noqa: ANN001
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.attributes["connection"] = connection
    return cfg


def upgrade_to_head(engine: Engine) -> None:
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            conn.commit()
        try:
            command.upgrade(alembic_config(conn), "head")
            conn.commit()
        finally:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
