"""Step 1 of the control loop's tick: observe the tasks the drivers run (``ControlLoop``'s
``observe``), with its containment: a driver whose batch ``observe`` raises is asked one task at
a time, so only the task at fault misses its observation; after ``observe_failure_limit`` ticks
in a row the task is stopped and fails with ``ObserveFailed``.
"""

from __future__ import annotations

import logging
from typing import Any

from gpuplane.control import apply as store_apply
from gpuplane.control.containment import REASON_OBSERVE_FAILED, one_line
from gpuplane.control.execution import outcome
from gpuplane.domain.errors import Conflict, LeaseLost
from gpuplane.drivers.base import DriverHandle

log = logging.getLogger("gpuplane.control")


def observe_each(driver: Any,
                 entries: list[tuple[Any, Any, DriverHandle]]
                 ) -> list[tuple[tuple[Any, Any, DriverHandle], Any]]:
    """``driver.observe`` over ``entries`` in one call; when that raises (or answers for
    fewer tasks), one call per task, so that only the task whose observation raises gets
    the exception (in place of its observation)."""
    try:
        observations = list(driver.observe([h for _, _, h in entries]))
        if len(observations) == len(entries):
            return list(zip(entries, observations))
    except Exception:  # noqa: BLE001 - find the one task at fault below
        log.debug("batch observe failed; observing one task at a time", exc_info=True)
    out: list[tuple[tuple[Any, Any, DriverHandle], Any]] = []
    for entry in entries:
        try:
            got = list(driver.observe([entry[2]]))
            out.append((entry, got[0] if got else
                        RuntimeError("the driver returned no observation")))
        except Exception as exc:  # noqa: BLE001
            out.append((entry, exc))
    return out


class TaskObserving:
    """The observe step, mixed into ``ControlLoop``, whose state it uses: ``store``,
    ``drivers``, ``clock``, ``stop_grace_s``, ``observe_failure_limit``, ``_observe_failures``
    and the loop's ``_driver_for``, ``_contain``, ``_fenced``, ``_saw`` and ``_stop_async``
    (what it reads is reused by the next steps of the tick until the loop writes)."""

    def observe(self, report: Any) -> None:
        """Step 1 of a tick: ask the drivers about every task with a handle and record what
        changed (see the class docstring)."""
        with self.store.read() as tx:
            active, host_list = tx.workloads.list_active(), tx.hosts.list_all()
        self._saw(active, host_list)
        hosts = {h.name: h for h in host_list}
        by_driver: dict[str, list[tuple[Any, Any, DriverHandle]]] = {}
        for w in active:
            for t in w.tasks:
                if not t.handle or not t.phase.holds_resources:
                    continue
                host = hosts.get(t.placement.host) if t.placement else None
                if host is None or self._driver_for(host) is None:
                    continue
                try:
                    h = DriverHandle.from_dict(t.handle)
                except Exception as exc:  # noqa: BLE001 - a handle the loop cannot read
                    self._contain(report, "observe", f"task:{t.id}",
                                  f"task {t.index} of workload {w.id} (its stored handle)", exc)
                    continue
                by_driver.setdefault(h.driver, []).append((w, t, h))
        changes = []
        failed = []
        now = self.clock()
        for name, entries in by_driver.items():
            driver = self.drivers.get(name)
            if driver is None:
                log.debug("no driver %r in this process for %d task(s)", name, len(entries))
                continue
            for (w, t, h), obs in observe_each(driver, entries):
                key = f"{h.driver}:{h.task_id}"
                try:
                    if isinstance(obs, BaseException):
                        raise obs
                    change = outcome(t, obs, now)
                except Exception as exc:  # noqa: BLE001 - this task's alone
                    n = self._observe_failures.get(key, 0) + 1
                    self._observe_failures[key] = n
                    self._contain(report, "observe", key,
                                  f"task {t.index} of workload {w.id} ({n} in a row)", exc)
                    if n >= self.observe_failure_limit:
                        failed.append((w, t, h, exc))
                    continue
                self._observe_failures.pop(key, None)
                if change is not None:
                    changes.append((w, t, h, change))
        for w, t, h, exc in failed:
            self._give_up_observing(w, t, h, exc, now, report)
        if not changes:
            return
        ended = store_apply.record_observations(
            self._fenced(), changes, self.clock(),
            on_error=lambda what, exc: self._contain(report, "observe", what,
                                                     f"recording the observation of {what}",
                                                     exc))
        report.observed_changes += len(changes)
        self.release_claims(h.task_id for h in ended)  # type: ignore[attr-defined]
        for h in ended:
            forget = getattr(self.drivers.get(h.driver), "forget", None)
            if forget is not None:
                try:
                    forget([h])
                except Exception as exc:  # noqa: BLE001
                    self._contain(report, "observe", f"{h.driver}:{h.task_id}",
                                  f"forgetting driver task {h.task_id}", exc)

    def _give_up_observing(self, w: Any, t: Any, h: DriverHandle, exc: BaseException,
                           now: float, report: Any) -> None:
        """A task the driver could not observe ``observe_failure_limit`` ticks in a row: ask
        its driver to stop it and fail it (``ObserveFailed``; the retry policy applies)."""
        key = f"{h.driver}:{h.task_id}"
        self._stop_async(h, self.stop_grace_s)
        message = (f"its driver could not observe it {self.observe_failure_limit} times in a "
                   f"row ({one_line(exc)}); stopped")
        try:
            store_apply.fail_task(self._fenced(), t, now, REASON_OBSERVE_FAILED, message)
            self._observe_failures.pop(key, None)
        except LeaseLost:
            raise
        except Conflict:
            log.debug("task %s changed while failing it; next tick decides again", t.id)
        except Exception as exc2:  # noqa: BLE001
            self._contain(report, "observe", key, f"failing task {t.index} of workload {w.id}",
                          exc2)
