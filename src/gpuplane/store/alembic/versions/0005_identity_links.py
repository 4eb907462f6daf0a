"""Identity links: which gpuplane organisation, project and user stand for which Keystone
domain, project and user, in a table only the Keystone mapping writes.

Until this revision the link was kept in fields tenants can set (a display name ending with
``(keystone domain|project <id>)``, a user's email ``keystone:<id>``), so a project admin could
claim another Keystone project's tokens by renaming. Existing links are carried over once (the
first object per link, as the mapping found them); the display names stay as they are.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 19:45:00
"""
from __future__ import annotations

import re
import time

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_DISPLAY = re.compile(r"\(keystone (domain|project) ([^()\s]+)\)$")


def upgrade() -> None:
    op.create_table('identity_links',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True,
              nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('external_id', sa.String(length=255), nullable=False),
    sa.Column('object_id', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_identity_links')),
    sa.UniqueConstraint('provider', 'kind', 'external_id',
                        name=op.f('uq_identity_links_provider'))
    )
    with op.batch_alter_table('identity_links') as b:
        b.create_index(b.f('ix_identity_links_object_id'), ['object_id'], unique=False)
    conn = op.get_bind()
    now = time.time()
    links: dict[tuple[str, str], int] = {}
    for table, kind in (("organisations", "domain"), ("projects", "project")):
        for oid, display in conn.execute(sa.text(f"SELECT id, display_name FROM {table} "
                                                 "ORDER BY id")):
            m = _DISPLAY.search(display or "")
            if m and m.group(1) == kind:
                links.setdefault(("organisation" if kind == "domain" else "project",
                                  m.group(2)), oid)
    for oid, email in conn.execute(sa.text("SELECT id, email FROM users ORDER BY id")):
        if (email or "").startswith("keystone:"):
            links.setdefault(("user", email[len("keystone:"):]), oid)
    table = sa.table('identity_links', sa.column('provider'), sa.column('kind'),
                     sa.column('external_id'), sa.column('object_id'), sa.column('created_at'))
    if links:
        op.bulk_insert(table, [{"provider": "keystone", "kind": k, "external_id": x,
                                "object_id": oid, "created_at": now}
                               for (k, x), oid in links.items()])


def downgrade() -> None:
    op.drop_table('identity_links')
