"""Many rows in one PostgreSQL statement: one array per column, ``unnest`` on the server.

psycopg's ``executemany`` sends a statement per row (about 0.3 ms of client CPU each: a tick
admitting 1,000 workloads writes ~4,000 rows), and a multi-row ``VALUES`` costs SQLAlchemy as
much to compile. Here each column's values travel as one parameter: numbers and booleans as an
array cast to the column's type; text and JSON columns as one JSON document (a list of the
values, ``json.dumps`` in C) that the server takes apart with ``json_array_elements`` (which
keeps each element's text as it was sent) in the order sent, because psycopg escapes every
element of a text array with a regular expression (a third of a 1,000-admission tick's
writes). A JSON ``None`` is stored as JSON ``null``, which is what SQLAlchemy's JSON type
writes for a bound ``None`` too; a text ``None`` as SQL NULL. SQLite keeps ``executemany``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import JSON, String, any_, insert, literal, text
from sqlalchemy.dialects.postgresql import ARRAY as PG_ARRAY


#: how a column's values travel: as an array, or inside one JSON document
ARRAY, AS_JSON, AS_TEXT = "array", "json", "text"


def _arrays(columns: Sequence[Any], rows: Sequence[Sequence[Any]], dialect: Any
            ) -> tuple[list[str], list[str], dict[str, Any]]:
    """(SQL type of each column, how it travels, ``a<i>`` -> the column's parameter)."""
    carry = [AS_JSON if isinstance(c.type, JSON) else AS_TEXT if isinstance(c.type, String)
             else ARRAY for c in columns]
    values: list[list[Any]] = [[] for _ in columns]
    for row in rows:
        for i, value in enumerate(row):
            values[i].append(value)
    params = {f"a{i}": json.dumps(v) if carry[i] != ARRAY else v for i, v in enumerate(values)}
    return [c.type.compile(dialect=dialect) for c in columns], carry, params


def _unnest(ddl: Sequence[str], carry: Sequence[str]) -> str:
    def column(i: int, d: str, how: str) -> str:
        if how == ARRAY:
            return f"CAST(:a{i} AS {d}[])"
        fn = "json_array_elements" if how == AS_JSON else "json_array_elements_text"
        return (f"ARRAY(SELECT e FROM {fn}(CAST(:a{i} AS JSON)) WITH ORDINALITY AS x(e, n) "
                "ORDER BY n)")
    return ", ".join(column(i, d, how) for i, (d, how) in enumerate(zip(ddl, carry)))


def _value(name: str, ddl: str, how: str) -> str:
    return f"v.{name}" if how == ARRAY else f"CAST(v.{name} AS {ddl})"


def update_from_arrays(t: Any, key: str, cols: Sequence[str],
                       group: Sequence[tuple[Any, int, Mapping[str, Any]]],
                       dialect: Any) -> tuple[Any, dict[str, Any]]:
    """(statement, parameters) of one generation-guarded ``UPDATE ... FROM unnest(...)`` for
    ``group``'s (key, seen generation, values); its rowcount says how many matched."""
    names = ["_key", "_seen", *cols]
    columns = [t.c[key], t.c.generation, *(t.c[c] for c in cols)]
    ddl, carry, params = _arrays(columns, [(k, seen, *(vals[c] for c in cols))
                                           for k, seen, vals in group], dialect)
    sets = "".join(f", {c} = {_value(c, d, how)}"
                   for c, d, how in zip(cols, ddl[2:], carry[2:]))
    sql = (f"UPDATE {t.name} SET generation = {t.name}.generation + 1{sets} "
           f"FROM unnest({_unnest(ddl, carry)}) AS v({', '.join(names)}) "
           f"WHERE {t.name}.{key} = v._key AND {t.name}.generation = v._seen")
    return text(sql), params


def insert_many(conn: Any, t: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (mappings with the same keys) into table ``t``."""
    if not rows:
        return
    if conn.dialect.name != "postgresql" or len(rows) == 1:
        conn.execute(insert(t), list(rows))
        return
    cols = list(rows[0])
    ddl, carry, params = _arrays([t.c[c] for c in cols], [[r[c] for c in cols] for r in rows],
                                 conn.dialect)
    select = ", ".join(_value(c, d, how) for c, d, how in zip(cols, ddl, carry))
    conn.execute(text(f"INSERT INTO {t.name} ({', '.join(cols)}) SELECT {select} "
                      f"FROM unnest({_unnest(ddl, carry)}) AS v({', '.join(cols)})"), params)


def among(session: Any, column: Any, values: Iterable[Any]) -> Any:
    """``column IN values``. On PostgreSQL one array parameter (``column = ANY(:values)``)
    instead of one parameter per value: SQLAlchemy renders an ``IN`` list afresh for every
    execution and psycopg then parses a statement with a placeholder per value (about a tenth
    of a tick admitting 1,000 workloads); the array form is one cached statement."""
    values = list(values)
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(literal(values, PG_ARRAY(column.type)))
    return column.in_(values)
