"""Bounded ``logs?follow=true`` streams.

A follow stream is an async generator: it sleeps with ``asyncio.sleep`` and borrows a worker
thread only for each short log read, so idle followers never hold the threadpool that serves
/healthz and every other request. Each stream holds a slot: at most
``GPUPLANE_LOG_FOLLOW_PER_USER`` per user (all of its tokens together: a user can mint more
tokens) and ``GPUPLANE_LOG_FOLLOW_MAX`` per process; above either, 429 problem+json with
Retry-After. The slot is taken and given back inside the response's own ``__call__``, so it is
released however the stream ends: task finished, no new bytes for
``GPUPLANE_LOG_FOLLOW_IDLE_S``, ``GPUPLANE_LOG_FOLLOW_MAX_S`` reached, access lost, or the
client gone (checked before every read; the server also cancels the stream on disconnect).
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gpuplane.api.problems import problem_response
from gpuplane.domain.errors import GpuplaneError
from gpuplane.service.logs import LogChunk

POLL_S = 0.5
RETRY_AFTER_S = 5


class FollowSlots:
    """Counts open follow streams per user and in all (thread-safe)."""

    def __init__(self, per_user: int, total: int) -> None:
        self.per_user = per_user
        self.total = total
        self._lock = threading.Lock()
        self._by_user: collections.Counter[int] = collections.Counter()

    def acquire(self, user_id: int) -> str | None:
        """Take a slot; returns None, or why not (the detail of the 429)."""
        with self._lock:
            if self._by_user[user_id] >= self.per_user:
                return (f"you already follow {self.per_user} logs (GPUPLANE_LOG_FOLLOW_PER_USER); "
                        "close one, or read without follow=true")
            if sum(self._by_user.values()) >= self.total:
                return (f"the server already serves {self.total} log follow streams "
                        "(GPUPLANE_LOG_FOLLOW_MAX); retry later, or read without follow=true")
            self._by_user[user_id] += 1
            return None

    def release(self, user_id: int) -> None:
        with self._lock:
            self._by_user[user_id] -= 1
            if self._by_user[user_id] <= 0:
                del self._by_user[user_id]

    def active(self, user_id: int | None = None) -> int:
        with self._lock:
            return sum(self._by_user.values()) if user_id is None else self._by_user[user_id]


@dataclass(frozen=True)
class FollowLimits:
    idle_s: float
    max_s: float
    poll_s: float = POLL_S


# read(offset) -> (workload is terminal, chunk or None); raises GpuplaneError when access ends
Reader = Callable[[int], tuple[bool, LogChunk | None]]


async def follow_chunks(request: Request, first: bytes, offset: int, read: Reader,
                        limits: FollowLimits) -> AsyncIterator[bytes]:
    """Yield ``first``, then new log bytes until the task ends or a limit is reached."""
    yield first
    started = last_bytes = time.monotonic()
    pos = offset
    while True:
        now = time.monotonic()
        if now - started >= limits.max_s or now - last_bytes >= limits.idle_s:
            return
        if await request.is_disconnected():
            return
        try:
            terminal, more = await run_in_threadpool(read, pos)
        except GpuplaneError:
            return  # deleted, or access revoked, while streaming: end the stream
        if more is None:
            return
        if more.data:
            last_bytes = time.monotonic()
            yield more.data
        pos = more.next_offset
        if more.complete or (terminal and not more.data):
            return
        if not more.data:
            await asyncio.sleep(limits.poll_s)


class FollowResponse(StreamingResponse):
    """A StreamingResponse that holds a follow slot for exactly as long as it is served."""

    def __init__(self, content: AsyncIterator[bytes], slots: FollowSlots, user_id: int,
                 **kwargs) -> None:  # noqa: ANN003
        super().__init__(content, **kwargs)
        self.slots = slots
        self.user_id = user_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refused = self.slots.acquire(self.user_id)
        if refused is not None:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]
            await problem_response(429, "gpuplane.logs.follow_limit", refused, scope.get("path"),
                                   headers={"Retry-After": str(RETRY_AFTER_S)}
                                   )(scope, receive, send)
            return
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slots.release(self.user_id)
            await self.body_iterator.aclose()  # type: ignore[attr-defined]
