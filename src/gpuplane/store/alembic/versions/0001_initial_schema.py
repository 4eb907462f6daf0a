"""Initial schema: inventory, tenancy, workloads, events, usage, audit chain, leases.

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 21:37:17.160044
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_head',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_head'))
    )
    op.create_table('audit_log',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('actor', sa.String(length=63), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('object_kind', sa.String(length=32), nullable=False),
    sa.Column('object_id', sa.String(length=253), nullable=False),
    sa.Column('project_id', sa.BigInteger(), nullable=True),
    sa.Column('org_id', sa.BigInteger(), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_action'), ['action'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_log_org_id'), ['org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_log_project_id'), ['project_id'], unique=False)

    op.create_table('leases',
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('holder', sa.String(length=253), nullable=True),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.Column('epoch', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_leases'))
    )
    op.create_table('organisations',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('display_name', sa.String(length=256), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_organisations')),
    sa.UniqueConstraint('name', name=op.f('uq_organisations_name'))
    )
    op.create_table('priority_classes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('value', sa.Integer(), nullable=False),
    sa.Column('preemptible', sa.Boolean(), nullable=False),
    sa.Column('is_default', sa.Boolean(), nullable=False),
    sa.Column('description', sa.String(length=512), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_priority_classes')),
    sa.UniqueConstraint('name', name=op.f('uq_priority_classes_name'))
    )
    op.create_table('sites',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('jurisdiction', sa.String(length=16), nullable=False),
    sa.Column('region', sa.String(length=63), nullable=False),
    sa.Column('provider', sa.String(length=128), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sites')),
    sa.UniqueConstraint('name', name=op.f('uq_sites_name'))
    )
    op.create_table('usage_records',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('project_id', sa.BigInteger(), nullable=False),
    sa.Column('workload_uid', sa.String(length=40), nullable=False),
    sa.Column('task_idx', sa.Integer(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('host_name', sa.String(length=253), nullable=False),
    sa.Column('gpu_model', sa.String(length=64), nullable=True),
    sa.Column('simulated', sa.Boolean(), nullable=False),
    sa.Column('gpu_milli', sa.BigInteger(), nullable=False),
    sa.Column('cpu_milli', sa.BigInteger(), nullable=False),
    sa.Column('memory_mib', sa.BigInteger(), nullable=False),
    sa.Column('started_at', sa.Float(), nullable=False),
    sa.Column('finished_at', sa.Float(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_usage_records'))
    )
    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_usage_records_finished_at'), ['finished_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_usage_records_project_id'), ['project_id'], unique=False)

    op.create_table('hosts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=253), nullable=False),
    sa.Column('site_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('cpu_milli', sa.BigInteger(), nullable=False),
    sa.Column('memory_mib', sa.BigInteger(), nullable=False),
    sa.Column('rack', sa.String(length=63), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('taints', sa.JSON(), nullable=False),
    sa.Column('tee', sa.String(length=32), nullable=True),
    sa.Column('driver', sa.String(length=32), nullable=False),
    sa.Column('simulated', sa.Boolean(), nullable=False),
    sa.Column('declared', sa.Boolean(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('heartbeat_at', sa.Float(), nullable=True),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_hosts_site_id_sites'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hosts')),
    sa.UniqueConstraint('name', name=op.f('uq_hosts_name'))
    )
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_hosts_site_id'), ['site_id'], unique=False)

    op.create_table('projects',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('org_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('display_name', sa.String(length=256), nullable=False),
    sa.Column('weight', sa.Float(), nullable=False),
    sa.Column('cohort', sa.String(length=63), nullable=True),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_projects_org_id_organisations'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_projects')),
    sa.UniqueConstraint('name', name=op.f('uq_projects_name'))
    )
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_projects_org_id'), ['org_id'], unique=False)

    op.create_table('users',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('email', sa.String(length=256), nullable=False),
    sa.Column('org_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organisations.id'], name=op.f('fk_users_org_id_organisations'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('name', name=op.f('uq_users_name'))
    )
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_users_org_id'), ['org_id'], unique=False)

    op.create_table('api_tokens',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=True),
    sa.Column('revoked_at', sa.Float(), nullable=True),
    sa.Column('last_used_at', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_api_tokens_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_tokens_user_id'), ['user_id'], unique=False)

    op.create_table('gpus',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('host_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('idx', sa.Integer(), nullable=False),
    sa.Column('model', sa.String(length=64), nullable=False),
    sa.Column('memory_mib', sa.BigInteger(), nullable=False),
    sa.Column('numa', sa.Integer(), nullable=False),
    sa.Column('nvlink_domain', sa.String(length=64), nullable=True),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('mig_layout', sa.JSON(), nullable=True),
    sa.Column('uuid', sa.String(length=128), nullable=True),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], name=op.f('fk_gpus_host_id_hosts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gpus')),
    sa.UniqueConstraint('host_id', 'idx', name=op.f('uq_gpus_host_id'))
    )
    with op.batch_alter_table('gpus', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_gpus_host_id'), ['host_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_gpus_model'), ['model'], unique=False)

    op.create_table('quotas',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('project_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('resource', sa.String(length=16), nullable=False),
    sa.Column('flavor', sa.String(length=64), nullable=False),
    sa.Column('guaranteed_milli', sa.BigInteger(), nullable=False),
    sa.Column('borrowing_limit_milli', sa.BigInteger(), nullable=True),
    sa.Column('lending_limit_milli', sa.BigInteger(), nullable=True),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_quotas_project_id_projects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_quotas')),
    sa.UniqueConstraint('project_id', 'resource', 'flavor', name=op.f('uq_quotas_project_id'))
    )
    with op.batch_alter_table('quotas', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_quotas_project_id'), ['project_id'], unique=False)

    op.create_table('role_bindings',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('scope_kind', sa.String(length=16), nullable=False),
    sa.Column('scope_id', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_role_bindings_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_role_bindings')),
    sa.UniqueConstraint('user_id', 'role', 'scope_kind', 'scope_id', name=op.f('uq_role_bindings_user_id'))
    )
    with op.batch_alter_table('role_bindings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_role_bindings_user_id'), ['user_id'], unique=False)

    op.create_table('workloads',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('uid', sa.String(length=40), nullable=False),
    sa.Column('project_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('phase', sa.String(length=16), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('priority_class', sa.String(length=63), nullable=False),
    sa.Column('preemptible', sa.Boolean(), nullable=False),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('pending_reason', sa.JSON(), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('submitted_by', sa.String(length=63), nullable=False),
    sa.Column('submitted_at', sa.Float(), nullable=False),
    sa.Column('admitted_at', sa.Float(), nullable=True),
    sa.Column('started_at', sa.Float(), nullable=True),
    sa.Column('finished_at', sa.Float(), nullable=True),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_workloads_project_id_projects'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_workloads')),
    sa.UniqueConstraint('project_id', 'name', name=op.f('uq_workloads_project_id')),
    sa.UniqueConstraint('uid', name=op.f('uq_workloads_uid'))
    )
    with op.batch_alter_table('workloads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_workloads_phase'), ['phase'], unique=False)
        batch_op.create_index(batch_op.f('ix_workloads_project_id'), ['project_id'], unique=False)

    op.create_table('events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('project_id', sa.BigInteger(), nullable=True),
    sa.Column('workload_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('host_name', sa.String(length=253), nullable=True),
    sa.Column('task_idx', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['workload_pk'], ['workloads.pk'], name=op.f('fk_events_workload_pk_workloads'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_events_project_id'), ['project_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_events_workload_pk'), ['workload_pk'], unique=False)

    op.create_table('tasks',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('workload_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('idx', sa.Integer(), nullable=False),
    sa.Column('group_name', sa.String(length=63), nullable=False),
    sa.Column('replica', sa.Integer(), nullable=False),
    sa.Column('phase', sa.String(length=16), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('cpu_milli', sa.BigInteger(), nullable=False),
    sa.Column('memory_mib', sa.BigInteger(), nullable=False),
    sa.Column('gpus', sa.Integer(), nullable=False),
    sa.Column('gpu_milli', sa.Integer(), nullable=False),
    sa.Column('mig_profile', sa.String(length=32), nullable=True),
    sa.Column('gpu_models', sa.JSON(), nullable=False),
    sa.Column('host_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('placement', sa.JSON(), nullable=True),
    sa.Column('handle', sa.JSON(), nullable=True),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('reason', sa.String(length=64), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('not_before', sa.Float(), nullable=True),
    sa.Column('started_at', sa.Float(), nullable=True),
    sa.Column('finished_at', sa.Float(), nullable=True),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], name=op.f('fk_tasks_host_id_hosts'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['workload_pk'], ['workloads.pk'], name=op.f('fk_tasks_workload_pk_workloads'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tasks')),
    sa.UniqueConstraint('workload_pk', 'idx', name=op.f('uq_tasks_workload_pk'))
    )
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tasks_host_id'), ['host_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_tasks_phase'), ['phase'], unique=False)
        batch_op.create_index(batch_op.f('ix_tasks_workload_pk'), ['workload_pk'], unique=False)

    # Seed rows that must exist before any concurrent writer arrives.
    op.bulk_insert(sa.table("audit_head", sa.column("id", sa.Integer()),
                            sa.column("seq", sa.BigInteger()), sa.column("hash", sa.String())),
                   [{"id": 1, "seq": 0, "hash": "0" * 64}])
    op.bulk_insert(sa.table("leases", sa.column("name", sa.String()),
                            sa.column("holder", sa.String()), sa.column("expires_at", sa.Float()),
                            sa.column("epoch", sa.BigInteger())),
                   [{"name": "scheduler", "holder": None, "expires_at": 0.0, "epoch": 0}])


def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tasks_workload_pk'))
        batch_op.drop_index(batch_op.f('ix_tasks_phase'))
        batch_op.drop_index(batch_op.f('ix_tasks_host_id'))

    op.drop_table('tasks')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_events_workload_pk'))
        batch_op.drop_index(batch_op.f('ix_events_project_id'))

    op.drop_table('events')
    with op.batch_alter_table('workloads', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_workloads_project_id'))
        batch_op.drop_index(batch_op.f('ix_workloads_phase'))

    op.drop_table('workloads')
    with op.batch_alter_table('role_bindings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_role_bindings_user_id'))

    op.drop_table('role_bindings')
    with op.batch_alter_table('quotas', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_quotas_project_id'))

    op.drop_table('quotas')
    with op.batch_alter_table('gpus', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gpus_model'))
        batch_op.drop_index(batch_op.f('ix_gpus_host_id'))

    op.drop_table('gpus')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_tokens_user_id'))

    op.drop_table('api_tokens')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_users_org_id'))

    op.drop_table('users')
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_projects_org_id'))

    op.drop_table('projects')
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_hosts_site_id'))

    op.drop_table('hosts')
    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_usage_records_project_id'))
        batch_op.drop_index(batch_op.f('ix_usage_records_finished_at'))

    op.drop_table('usage_records')
    op.drop_table('sites')
    op.drop_table('priority_classes')
    op.drop_table('organisations')
    op.drop_table('leases')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_project_id'))
        batch_op.drop_index(batch_op.f('ix_audit_log_org_id'))
        batch_op.drop_index(batch_op.f('ix_audit_log_action'))

    op.drop_table('audit_log')
    op.drop_table('audit_head')
