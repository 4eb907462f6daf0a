"""Bulk writes (``store.bulk``: one ``unnest`` statement on PostgreSQL, ``executemany`` on
SQLite) store exactly what row-by-row writes store: NULLs, JSON (null, nested, unicode), quotes;
and a guarded bulk update that meets a moved generation raises ``Conflict`` and writes nothing;
``among`` selects what ``IN`` selects."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from gpuplane.domain.errors import Conflict
from gpuplane.store.bulk import among, insert_many
from gpuplane.store.generations import guarded_update_many
from gpuplane.store.tables import AuditRow, SiteRow

ODD = ["plain", "it's \"quoted\" \\ back", "ünïcødé ✓ {a,b} NULL", "line\nbreak\ttab 🚀", "", None]


def test_insert_many_stores_what_it_was_given(store):
    rows = [dict(seq=i + 1, at=1.5 * i, actor="a", action="x.y", object_kind="k",
                 object_id=str(i), project_id=None if i % 2 else i, org_id=None,
                 outcome="ok", detail={"n": i, "text": ODD[i % 5], "none": None,
                                       "nested": {"list": [1, None, "ü"]}},
                 policy_hash="", prev_hash="0" * 64, hash=f"{i:064x}")
            for i in range(7)]
    with store.write() as tx:
        insert_many(tx.session.connection(), AuditRow.__table__, rows)
    with store.read() as tx:
        got = tx.session.execute(select(AuditRow).order_by(AuditRow.seq)).scalars().all()
        assert [{k: getattr(r, k) for k in rows[0]} for r in got] == rows


def test_guarded_update_many_writes_all_or_raises(store):
    with store.write() as tx:
        for i in range(4):
            tx.session.add(SiteRow(name=f"s{i}", jurisdiction="CH", labels={}, created_at=1.0))
    with store.read() as tx:
        sites = tx.session.execute(select(SiteRow.id, SiteRow.generation)).all()
    labels = [{"a": ODD[i]} if i % 2 else None for i in range(len(sites))]
    with store.write() as tx:
        guarded_update_many(tx.session, SiteRow, "id",
                            [(sid, gen, {"labels": lab, "region": ODD[i % 5]})
                             for i, ((sid, gen), lab) in enumerate(zip(sites, labels))], "site")
    with store.read() as tx:
        rows = tx.session.execute(select(SiteRow.id, SiteRow.generation, SiteRow.labels,
                                         SiteRow.region).order_by(SiteRow.id)).all()
        assert [(r.generation, r.labels, r.region) for r in rows] == [
            (gen + 1, lab, ODD[i % 5]) for i, ((_, gen), lab) in enumerate(zip(sites, labels))]
    with pytest.raises(Conflict), store.write() as tx:  # one stale generation: nothing written
        guarded_update_many(tx.session, SiteRow, "id",
                            [(r.id, r.generation - (i == 2), {"region": "moved"})
                             for i, r in enumerate(rows)], "site")
    with store.read() as tx:
        assert "moved" not in {r.region for r in tx.session.execute(select(SiteRow)).scalars()}


def test_among_selects_exactly_the_values_given(store):
    """``among`` (PostgreSQL: ``= ANY(array)``; SQLite: ``IN``) matches what ``IN`` matches, for
    numbers and for names with array-syntax characters, quotes and newlines."""
    names = [v for v in ODD if v] + ["{}", "a,b", "NULL"]
    with store.write() as tx:
        for n in names:
            tx.session.add(SiteRow(name=n, jurisdiction="CH", labels={}, created_at=1.0))
    with store.read() as tx:
        ids = dict(tx.session.execute(select(SiteRow.name, SiteRow.id)).tuples().all())
        for want in (names, names[::2], ["absent", names[1]], [names[-1]]):
            got = tx.session.execute(select(SiteRow.name)
                                     .where(among(tx.session, SiteRow.name, want))).scalars()
            assert sorted(got) == sorted(n for n in want if n in ids)
            by_id = tx.session.execute(select(SiteRow.name).where(
                among(tx.session, SiteRow.id, [ids[n] for n in want if n in ids] + [-1])))
            assert sorted(by_id.scalars()) == sorted(n for n in want if n in ids)
