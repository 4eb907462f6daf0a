"""A throwaway PostgreSQL database for a benchmark run (shared by the benchmarks that take
``--pg-url``): created on the server of the URL given, dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Callable


def throwaway_database(base: str) -> tuple[str, Callable[[], None]]:
    """A fresh database on the server of ``base`` (a SQLAlchemy URL) and a function that
    drops it."""
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:10]}"
    plain = base.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return base.rsplit("/", 1)[0] + "/" + name, drop
