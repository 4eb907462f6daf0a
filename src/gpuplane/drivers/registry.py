"""Driver registry: name -> factory (STYLE habit 4). Unknown names list the valid ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpuplane.domain.errors import InvalidInput


def _local(**kw: Any) -> Any:
    from gpuplane.drivers.local import LocalDriver
    return LocalDriver(**kw)


def _sim(**kw: Any) -> Any:
    from gpuplane.drivers.sim import SimDriver
    return SimDriver(**kw)


def _nova(**kw: Any) -> Any:
    from gpuplane.drivers.openstack.nova_driver import NovaDriver
    return NovaDriver(**kw)


DRIVERS: dict[str, Callable[..., Any]] = {"local": _local, "nova": _nova, "sim": _sim}


def make_driver(name: str, **kwargs: Any) -> Any:
    """Build the driver called ``name``; raises ``InvalidInput`` listing valid names."""
    try:
        factory = DRIVERS[name]
    except KeyError:
        raise InvalidInput(f"unknown driver {name!r}; valid drivers: {', '.join(sorted(DRIVERS))}",
                           code="gpuplane.driver.unknown") from None
    return factory(**kwargs)
