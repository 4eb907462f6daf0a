"""Scheduler memory: named JSON documents the control loop keeps across leaders.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 13:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('scheduler_state',
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('epoch', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_scheduler_state'))
    )


def downgrade() -> None:
    op.drop_table('scheduler_state')
