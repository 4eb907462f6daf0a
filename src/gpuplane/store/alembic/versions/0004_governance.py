"""Governance: signed audit checkpoints, policy documents, attestation results, chargeback detail.

The audit entry gains ``policy_hash`` and its ``hash`` becomes the RFC 9162 leaf hash of the
entry (governance/audit.py); entries written before this revision are re-hashed here, once, in
order (an installation of 0.1 had no signed checkpoint yet, so nothing signed is contradicted).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 16:20:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('audit_log') as b:
        b.add_column(sa.Column('policy_hash', sa.String(length=64), nullable=False,
                               server_default=''))
    with op.batch_alter_table('audit_head') as b:
        b.add_column(sa.Column('origin', sa.String(length=253), nullable=False,
                               server_default=''))
        b.add_column(sa.Column('public_keys', sa.JSON(), nullable=False, server_default='[]'))
        b.add_column(sa.Column('policy_hash', sa.String(length=64), nullable=False,
                               server_default=''))
    with op.batch_alter_table('projects') as b:
        b.add_column(sa.Column('classification', sa.String(length=63), nullable=True))
    with op.batch_alter_table('usage_records') as b:
        b.add_column(sa.Column('placement', sa.JSON(), nullable=True))
    op.create_table('audit_checkpoints',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True,
              nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('root_hash', sa.String(length=64), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('reason', sa.String(length=16), nullable=False),
    sa.Column('timestamp_token', sa.Text(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_checkpoints'))
    )
    op.create_index(op.f('ix_audit_checkpoints_size'), 'audit_checkpoints', ['size'])
    op.create_table('policy_documents',
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('updated_by', sa.String(length=63), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_policy_documents'))
    )
    op.create_table('attestation_challenges',
    sa.Column('nonce', sa.String(length=128), nullable=False),
    sa.Column('host_name', sa.String(length=253), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('nonce', name=op.f('pk_attestation_challenges'))
    )
    op.create_index(op.f('ix_attestation_challenges_host_name'), 'attestation_challenges',
                    ['host_name'])
    op.create_table('attestation_results',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True,
              nullable=False),
    sa.Column('host_name', sa.String(length=253), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('passed', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reasons', sa.JSON(), nullable=False),
    sa.Column('claims', sa.JSON(), nullable=False),
    sa.Column('ear', sa.JSON(), nullable=False),
    sa.Column('appraised_at', sa.Float(), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_attestation_results'))
    )
    op.create_index(op.f('ix_attestation_results_host_name'), 'attestation_results',
                    ['host_name'])
    _rehash_audit()


def _rehash_audit() -> None:
    from gpuplane.governance.audit import rehash_rows

    conn = op.get_bind()
    log = sa.table('audit_log', sa.column('detail', sa.JSON()), *(sa.column(c) for c in (
        'seq', 'at', 'actor', 'action', 'object_kind', 'object_id', 'project_id', 'org_id',
        'outcome', 'policy_hash', 'prev_hash', 'hash')))
    rows = [dict(r._mapping) for r in conn.execute(sa.select(log).order_by(log.c.seq))]
    if not rows:
        return
    for seq, prev, h in rehash_rows(rows):
        conn.execute(sa.update(log).where(log.c.seq == seq).values(prev_hash=prev, hash=h))
    head = sa.table('audit_head', sa.column('id'), sa.column('hash'))
    conn.execute(sa.update(head).where(head.c.id == 1).values(hash=h))


def downgrade() -> None:
    for t in ('attestation_results', 'attestation_challenges', 'policy_documents',
              'audit_checkpoints'):
        op.drop_table(t)
    with op.batch_alter_table('usage_records') as b:
        b.drop_column('placement')
    with op.batch_alter_table('projects') as b:
        b.drop_column('classification')
    with op.batch_alter_table('audit_head') as b:
        b.drop_column('policy_hash')
        b.drop_column('public_keys')
        b.drop_column('origin')
    with op.batch_alter_table('audit_log') as b:
        b.drop_column('policy_hash')
