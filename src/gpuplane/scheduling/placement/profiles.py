"""Profiles: named compositions of plugins with weights.

``get(name, workload=None, online=None)`` builds a fresh :class:`Profile` (fresh plugin
instances, so caches are per profile). Names: ``random dotprod clustering
packing bestfit fgd`` (the faithful FGD_PROTOCOL baselines) and ``gpuplane`` (the
default policy). ``workload`` is the target workload for fragmentation-aware
plugins (ignored by the others); ``online`` is the scheduler's
:class:`~gpuplane.scheduling.placement.online.OnlineWorkload`, which ``gpuplane`` reads
when no ``workload`` is given (ignored by the others).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpuplane.domain.errors import FieldError, InvalidInput
from gpuplane.scheduling.placement.fragmentation import TypicalWorkload
from gpuplane.scheduling.placement.framework import Profile
from gpuplane.scheduling.placement.registry import make_plugin

DEFAULT = "gpuplane"


def base_filters() -> tuple:
    """The feasibility filters every profile shares (FGD_PROTOCOL §4 plus
    labels/taints): CPU+memory, GPU model, selector, taints, whole/shared GPU fit, MIG fit.
    MIG plugins pass (and score 0 for) every task without a ``mig_profile``, so the
    FGD baselines are unchanged by them."""
    return (make_plugin("resource_fit"), make_plugin("gpu_model"), make_plugin("node_selector"),
            make_plugin("taint_toleration"), make_plugin("gpu_fit"), make_plugin("mig_fit"))


def _mig_choosers(*others: object) -> tuple:
    """GPU choosers: the MIG chooser first (it only takes tasks with a ``mig_profile``)."""
    return (make_plugin("mig_chooser"),) + others


def _single(name: str, chooser: str = "bestfit_gpus") -> Callable[..., Profile]:
    def build(workload: TypicalWorkload | None = None, online: Any = None) -> Profile:
        return Profile(name=name, filters=base_filters(), scores=((make_plugin(name), 1),),
                       choosers=_mig_choosers(make_plugin(chooser)))
    return build


def _random(workload: TypicalWorkload | None = None, online: Any = None) -> Profile:
    return Profile(name="random", filters=base_filters(), scores=(),
                   choosers=_mig_choosers(make_plugin("random_gpus")), tie_break="random")


def _fgd(workload: TypicalWorkload | None = None, online: Any = None,
         name: str = "fgd") -> Profile:
    fgd = make_plugin("fgd", workload=workload)
    return Profile(name=name, filters=base_filters(), scores=((fgd, 1),),
                   choosers=_mig_choosers(fgd))


def _gpuplane(workload: TypicalWorkload | None = None, online: Any = None) -> Profile:
    # The default policy (owned by the "policy" area, plugins/gpuplane.py; docs/policy.md).
    gp = make_plugin("gpuplane", workload=workload, online=online)
    # MIG tasks: the MIG packing score keeps the most future slice placements open.
    return Profile(name="gpuplane", filters=base_filters(),
                   scores=((gp, 1), (make_plugin("mig_packing"), 1)), choosers=_mig_choosers(gp))


PROFILES: dict[str, Callable[..., Profile]] = {
    "random": _random,
    "dotprod": _single("dotprod"),
    "clustering": _single("clustering"),
    "packing": _single("packing"),
    "bestfit": _single("bestfit"),
    "fgd": _fgd,
    "gpuplane": _gpuplane,
}

BASELINES: tuple[str, ...] = ("random", "dotprod", "clustering", "packing", "bestfit", "fgd")


def names() -> list[str]:
    return list(PROFILES)


def get(name: str = DEFAULT, workload: TypicalWorkload | None = None,
        online: Any = None) -> Profile:
    """A fresh profile by name; unknown names raise ``InvalidInput`` listing the valid ones."""
    factory = PROFILES.get(name)
    if factory is None:
        raise InvalidInput(f"unknown placement policy {name!r}",
                           [FieldError("policy", f"valid: {', '.join(PROFILES)}")],
                           code="gpuplane.placement.unknown_policy")
    return factory(workload=workload, online=online)
