"""Preemption protocol: a task's last preemption (beneficiary, grace, outcome, lost time) and
the GPU-time each usage record lost since its last checkpoint; the last checkpoint a running
task reported.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 23:05:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('preemption', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('checkpointed_at', sa.Float(), nullable=True))
    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lost_gpu_s', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        batch_op.drop_column('lost_gpu_s')
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_column('checkpointed_at')
        batch_op.drop_column('preemption')
