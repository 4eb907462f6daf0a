"""Many rows in one PostgreSQL statement: one array per column, ``unnest`` on the server.

psycopg's ``executemany`` sends a statement per row (about 0.3 ms of client CPU each: a tick
admitting 1,000 workloads writes ~4,000 rows), and a multi-row ``VALUES`` costs SQLAlchemy as
much to compile. Here each column's values travel as one array parameter, cast to the column's
type; JSON values travel as JSON text (``None`` as JSON ``null``, which is what SQLAlchemy's JSON
type writes for a bound ``None`` too) and are cast back. SQLite keeps ``executemany``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import JSON, insert, text


def _arrays(columns: Sequence[Any], rows: Sequence[Sequence[Any]], dialect: Any
            ) -> tuple[list[str], list[bool], dict[str, list[Any]]]:
    """(SQL type of each column, whether it is JSON, ``a<i>`` -> the column's values)."""
    is_json = [isinstance(c.type, JSON) for c in columns]
    arrays: dict[str, list[Any]] = {f"a{i}": [] for i in range(len(columns))}
    for row in rows:
        for i, value in enumerate(row):
            arrays[f"a{i}"].append(json.dumps(value) if is_json[i] else value)
    return [c.type.compile(dialect=dialect) for c in columns], is_json, arrays


def _unnest(ddl: Sequence[str], is_json: Sequence[bool]) -> str:
    return ", ".join(f"CAST(:a{i} AS {'TEXT' if j else d}[])"
                     for i, (d, j) in enumerate(zip(ddl, is_json)))


def _value(name: str, ddl: str, is_json: bool) -> str:
    return f"CAST(v.{name} AS {ddl})" if is_json else f"v.{name}"


def update_from_arrays(t: Any, key: str, cols: Sequence[str],
                       group: Sequence[tuple[Any, int, Mapping[str, Any]]],
                       dialect: Any) -> tuple[Any, dict[str, list[Any]]]:
    """(statement, parameters) of one generation-guarded ``UPDATE ... FROM unnest(...)`` for
    ``group``'s (key, seen generation, values); its rowcount says how many matched."""
    names = ["_key", "_seen", *cols]
    columns = [t.c[key], t.c.generation, *(t.c[c] for c in cols)]
    ddl, is_json, arrays = _arrays(columns, [(k, seen, *(vals[c] for c in cols))
                                             for k, seen, vals in group], dialect)
    sets = "".join(f", {c} = {_value(c, d, j)}"
                   for c, d, j in zip(cols, ddl[2:], is_json[2:]))
    sql = (f"UPDATE {t.name} SET generation = {t.name}.generation + 1{sets} "
           f"FROM unnest({_unnest(ddl, is_json)}) AS v({', '.join(names)}) "
           f"WHERE {t.name}.{key} = v._key AND {t.name}.generation = v._seen")
    return text(sql), arrays


def insert_many(conn: Any, t: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (mappings with the same keys) into table ``t``."""
    if not rows:
        return
    if conn.dialect.name != "postgresql" or len(rows) == 1:
        conn.execute(insert(t), list(rows))
        return
    cols = list(rows[0])
    ddl, is_json, arrays = _arrays([t.c[c] for c in cols], [[r[c] for c in cols] for r in rows],
                                   conn.dialect)
    select = ", ".join(_value(c, d, j) for c, d, j in zip(cols, ddl, is_json))
    conn.execute(text(f"INSERT INTO {t.name} ({', '.join(cols)}) SELECT {select} "
                      f"FROM unnest({_unnest(ddl, is_json)}) AS v({', '.join(cols)})"), arrays)
