"""The scheduler's memory across leaders: named JSON documents in the store.

Some scheduling state is learnt over time rather than read from the store each tick: the
fair-share usage history (``UsageHistory``, decayed over days), a placement workload model.
``SchedulerMemory`` keeps such objects under names and persists them in the table
``scheduler_state`` (``store/repos_state.py``):

- when the loop takes the lease, ``load`` reads every named document and replaces each object
  with ``type(obj).from_dict(data)`` (or calls ``PersistedState.load``); a document that is
  missing or cannot be read leaves the object as it is (a WARNING for the latter);
- during a tick, ``due`` returns the documents whose JSON changed since they were last written
  or loaded (at most every ``every_s`` seconds); the loop writes them with ``write`` inside one of
  its fenced write transactions, so a stale leader cannot overwrite its successor's memory.
  A document larger than ``max_bytes`` of JSON is not written (a WARNING names it).

An object kept here either has ``to_dict()`` and a ``from_dict(data)`` classmethod, or is a
``PersistedState`` pair of callables (for state that lives inside another object).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("gpuplane.control")

#: the largest document written (bytes of JSON)
MAX_DOCUMENT_BYTES = 1 << 20


@dataclass
class PersistedState:
    """State kept elsewhere: ``dump()`` returns it as a JSON-able mapping, ``load(data)`` puts
    a stored mapping back (and may raise ``ValueError`` on one it cannot read)."""

    dump: Callable[[], Mapping[str, Any]]
    load: Callable[[Mapping[str, Any]], None]


class SchedulerMemory:
    """Named objects persisted by the lease holder (see the module docstring).

    Not thread-safe: the loop's tick thread alone calls ``load``, ``due`` and ``committed``."""

    def __init__(self, objects: Mapping[str, Any] | None = None, *, every_s: float = 5.0,
                 max_bytes: int = MAX_DOCUMENT_BYTES) -> None:
        self.objects: dict[str, Any] = dict(objects or {})
        self.every_s = every_s
        self.max_bytes = max_bytes
        self._written: dict[str, str] = {}  # name -> JSON as last loaded or written
        self._last_write = float("-inf")
        self._too_big: set[str] = set()

    def __getitem__(self, name: str) -> Any:
        return self.objects[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.objects.get(name, default)

    def load(self, store: Any) -> list[str]:
        """Replace the objects with their stored documents; returns the names loaded."""
        if not self.objects:
            return []
        with store.read() as tx:
            docs = tx.scheduler_state.get(self.objects)
        loaded = []
        for name, doc in docs.items():
            obj = self.objects[name]
            try:
                if isinstance(obj, PersistedState):
                    obj.load(doc.data)
                else:
                    self.objects[name] = type(obj).from_dict(doc.data)
            except Exception as exc:  # noqa: BLE001 - start from the object as it is
                log.warning("scheduler memory %r (written by lease epoch %s) cannot be read, "
                            "starting afresh: %s", name, doc.epoch, exc)
                continue
            self._written[name] = _text(doc.data)
            loaded.append(name)
        if loaded:
            log.info("scheduler memory loaded: %s", ", ".join(sorted(loaded)))
        return loaded

    def due(self, now: float, force: bool = False) -> dict[str, dict[str, Any]]:
        """The documents to write now: those changed since last written or loaded, once
        ``every_s`` has passed since the last write (empty otherwise; ``force``: at once)."""
        if not self.objects or (not force and now - self._last_write < self.every_s):
            return {}
        out = {}
        for name, obj in self.objects.items():
            try:
                data = dict(obj.dump() if isinstance(obj, PersistedState) else obj.to_dict())
                text = _text(data)
            except Exception as exc:  # noqa: BLE001 - one document's trouble is its own
                log.warning("scheduler memory %r cannot be saved: %s", name, exc)
                continue
            if text == self._written.get(name):
                continue
            if len(text.encode()) > self.max_bytes:
                if name not in self._too_big:
                    log.warning("scheduler memory %r is %d bytes of JSON, over the limit of %d; "
                                "it is not saved", name, len(text.encode()), self.max_bytes)
                    self._too_big.add(name)
                continue
            self._too_big.discard(name)
            out[name] = data
        return out

    @staticmethod
    def write(tx: Any, documents: Mapping[str, Mapping[str, Any]], epoch: int,
              now: float) -> None:
        """Store ``documents`` in the caller's (fenced) write transaction."""
        for name, data in sorted(documents.items()):
            tx.scheduler_state.put(name, data, epoch, now)

    def committed(self, documents: Mapping[str, Mapping[str, Any]], now: float) -> None:
        """The transaction that wrote ``documents`` committed."""
        for name, data in documents.items():
            self._written[name] = _text(data)
        self._last_write = now


def _text(data: Mapping[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


__all__ = ["MAX_DOCUMENT_BYTES", "PersistedState", "SchedulerMemory"]
