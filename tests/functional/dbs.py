"""Database fixtures shared by tests/functional and tests/api: every case runs on SQLite and,
when GPUPLANE_TEST_PG_URL is set, on PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest


def database_params() -> list[Any]:
    params: list[Any] = ["sqlite"]
    if os.environ.get("GPUPLANE_TEST_PG_URL"):
        params.append(pytest.param("postgresql", marks=pytest.mark.postgres))
    else:
        params.append(pytest.param("postgresql", marks=pytest.mark.skip(
            reason="GPUPLANE_TEST_PG_URL not set")))
    return params


def make_db_url(kind: str, tmp_path) -> Iterator[str]:  # noqa: ANN001
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'gpuplane.db'}"
        return
    import psycopg

    base = os.environ["GPUPLANE_TEST_PG_URL"]
    name = f"api_{uuid.uuid4().hex[:12]}"
    plain = base.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield base.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class FakeClock:
    """A clock tests move by hand (seconds since the epoch)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
