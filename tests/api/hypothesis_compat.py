"""Compatibility shim: hypothesis-jsonschema 0.23 (used by schemathesis 3) drives
``hypothesis.internal.conjecture.utils.many`` through ``more()``, which newer Hypothesis
releases replaced by ``with many(...) as elements: for _ in elements:``. This adds ``more()``
on top of the new protocol (enter on first call, one iteration step per call, exit at the end),
and does nothing on a Hypothesis that still has it."""

from __future__ import annotations

from hypothesis.internal.conjecture import utils as cu


def install() -> None:
    if hasattr(cu.many, "more"):
        return

    def more(self) -> bool:  # noqa: ANN001
        if getattr(self, "_compat_iter", None) is None:
            self.__enter__()
            self._compat_iter = iter(self)
        try:
            next(self._compat_iter)
            return True
        except StopIteration:
            self.__exit__(None)
            return False

    cu.many.more = more  # type: ignore[attr-defined]
