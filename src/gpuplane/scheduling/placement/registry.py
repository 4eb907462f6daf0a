"""The plugin registry: one dict literal, name -> factory (STYLE habit 4).

Factories take keyword arguments only (e.g. ``fgd(workload=...)``). Unknown names
raise ``InvalidInput`` listing the valid ones. Optional plugins owned by other
areas (``mig``, ``gpuplane*``) are imported lazily by their factory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpuplane.domain.errors import FieldError, InvalidInput
from gpuplane.scheduling.placement.plugins.bestfit import BestFit
from gpuplane.scheduling.placement.plugins.choosers import BestFitGpus, RandomGpus
from gpuplane.scheduling.placement.plugins.clustering import Clustering
from gpuplane.scheduling.placement.plugins.dotprod import DotProd
from gpuplane.scheduling.placement.plugins.fgd import Fgd
from gpuplane.scheduling.placement.plugins.gpu_fit import GpuFit
from gpuplane.scheduling.placement.plugins.gpu_model import GpuModel
from gpuplane.scheduling.placement.plugins.packing import Packing
from gpuplane.scheduling.placement.plugins.resources import ResourceFit
from gpuplane.scheduling.placement.plugins.selector import NodeSelector
from gpuplane.scheduling.placement.plugins.taints import TaintToleration


def _gpuplane(**args: Any) -> Any:
    from gpuplane.scheduling.placement.plugins.gpuplane import Gpuplane  # policy area
    return Gpuplane(**args)


def _mig(cls: str) -> Callable[..., Any]:
    def build(**args: Any) -> Any:
        from gpuplane.scheduling.placement.plugins import mig  # mig area
        return getattr(mig, cls)(**args)
    return build


PLUGINS: dict[str, Callable[..., Any]] = {
    # filters
    "resource_fit": ResourceFit,
    "gpu_model": GpuModel,
    "node_selector": NodeSelector,
    "taint_toleration": TaintToleration,
    "gpu_fit": GpuFit,
    "mig_fit": _mig("MigFit"),
    # scores (fgd is also a GPU chooser)
    "dotprod": DotProd,
    "clustering": Clustering,
    "packing": Packing,
    "bestfit": BestFit,
    "fgd": Fgd,
    "gpuplane": _gpuplane,
    "mig_packing": _mig("MigPacking"),
    # GPU choosers
    "bestfit_gpus": BestFitGpus,
    "random_gpus": RandomGpus,
    "mig_chooser": _mig("MigChooser"),
}


def make_plugin(name: str, **args: Any) -> Any:
    """Instantiate plugin ``name`` with ``args``; unknown names list the valid ones."""
    factory = PLUGINS.get(name)
    if factory is None:
        raise InvalidInput(f"unknown placement plugin {name!r}",
                           [FieldError("plugin", f"valid: {', '.join(sorted(PLUGINS))}")],
                           code="gpuplane.placement.unknown_plugin")
    return factory(**args)
