"""``Tx``: one transaction with one repository per concept (``tx.workloads.get(...)``)."""

from __future__ import annotations

from functools import cached_property

from sqlalchemy.orm import Session

from gpuplane.store.repos_audit import AuditRepo
from gpuplane.store.repos_governance import AttestationRepo, CheckpointRepo, PolicyDocumentRepo
from gpuplane.store.repos_inventory import HostRepo, SiteRepo
from gpuplane.store.repos_policy import PriorityRepo, QuotaRepo
from gpuplane.store.repos_state import SchedulerStateRepo
from gpuplane.store.repos_tenancy import OrgRepo, ProjectRepo, TokenRepo, UserRepo
from gpuplane.store.repos_workloads import EventRepo, TaskRepo, UsageRepo, WorkloadRepo


class Tx:
    """Repositories sharing one session; created by ``Store.read()`` / ``Store.write()``."""

    def __init__(self, session: Session, dialect: str) -> None:
        self.session = session
        self.dialect = dialect

    @cached_property
    def sites(self) -> SiteRepo:
        return SiteRepo(self.session)

    @cached_property
    def hosts(self) -> HostRepo:
        return HostRepo(self.session)

    @cached_property
    def orgs(self) -> OrgRepo:
        return OrgRepo(self.session)

    @cached_property
    def projects(self) -> ProjectRepo:
        return ProjectRepo(self.session)

    @cached_property
    def users(self) -> UserRepo:
        return UserRepo(self.session)

    @cached_property
    def tokens(self) -> TokenRepo:
        return TokenRepo(self.session)

    @cached_property
    def quotas(self) -> QuotaRepo:
        return QuotaRepo(self.session)

    @cached_property
    def priorities(self) -> PriorityRepo:
        return PriorityRepo(self.session)

    @cached_property
    def workloads(self) -> WorkloadRepo:
        return WorkloadRepo(self.session)

    @cached_property
    def tasks(self) -> TaskRepo:
        return TaskRepo(self.session)

    @cached_property
    def events(self) -> EventRepo:
        return EventRepo(self.session)

    @cached_property
    def usage(self) -> UsageRepo:
        return UsageRepo(self.session)

    @cached_property
    def audit(self) -> AuditRepo:
        return AuditRepo(self.session)

    @cached_property
    def scheduler_state(self) -> SchedulerStateRepo:
        return SchedulerStateRepo(self.session)

    @cached_property
    def policy_docs(self) -> PolicyDocumentRepo:
        return PolicyDocumentRepo(self.session)

    @cached_property
    def checkpoints(self) -> CheckpointRepo:
        return CheckpointRepo(self.session)

    @cached_property
    def attestation(self) -> AttestationRepo:
        return AttestationRepo(self.session)
