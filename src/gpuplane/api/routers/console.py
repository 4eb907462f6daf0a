"""/v1/stream: live updates for the web console, as server-sent events.

An ``EventSource`` cannot send an ``Authorization`` header, so the token is presented once,
in a POST: ``POST /v1/stream/tickets`` (bearer token as on every /v1 route) answers a random
ticket that is valid for ``TICKET_TTL_S`` seconds and for one use; ``GET
/v1/stream?ticket=...`` trades it for the stream. A ticket is kept in this process's memory
only, so it works on the process that issued it (``gpuplane up`` is one process).

The stream computes each *view* of the console (``whoami``, ``fleet``, ``workloads``,
``tenancy``; ``web/views.py``) as the ticket's principal, with the authorisation of the REST
routes that show the same data, every ``poll_s`` seconds; it sends a view (``event: <view>``,
``data: <json>``) when it changed since this stream sent it last, ``workloads`` as changes
(the first event all, then the workloads that changed and the ids that left). So a tenant's
stream carries what the tenant could list over REST, and a client is sent only what changed.
Every ``RECHECK_S`` the token is authenticated again: a revoked token, or changed role
bindings, take effect within that time; a stream ends after ``MAX_S`` (the console then asks
for a new ticket and reconnects).

Where the server keeps the pool's history (``api/history.py``, started by
``web.mount_dashboard``), the stream also sends ``event: history`` with the samples the page
has not had yet (all kept ones first), and ``GET /v1/history`` answers them; per-tenant use is
cut to the projects whose quotas the caller may read, as on ``/metrics``.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field

from gpuplane.api.deps import Svc, Who, bearer, client_source
from gpuplane.api.problems import problem_response, responses
from gpuplane.domain.errors import GpuplaneError, NotFound
from gpuplane.service import Principal, Services, Unauthenticated
from gpuplane.web import views

router = APIRouter(prefix="/v1", tags=["console"], responses=responses(401, 422))

TICKET_TTL_S = 30.0
TICKETS_PER_USER = 16      # outstanding (issued, unused, unexpired) tickets per user
TICKETS_MAX = 10_000       # outstanding tickets in all
STREAMS_PER_USER = 8
STREAMS_MAX = 256
POLL_S = 1.5
HEARTBEAT_S = 15.0
RECHECK_S = 30.0
MAX_S = 900.0


@dataclass
class _Ticket:
    user_id: int
    expires_at: float
    reauth: Callable[[], Principal]


class StreamBook:
    """Tickets (in memory, single use) and open streams per user, thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._tickets: dict[str, _Ticket] = {}
        self._streams: collections.Counter[int] = collections.Counter()

    def issue(self, user_id: int, reauth: Callable[[], Principal]) -> str:
        now = self.clock()
        with self._lock:
            for key in [k for k, t in self._tickets.items() if t.expires_at <= now]:
                del self._tickets[key]
            mine = sum(1 for t in self._tickets.values() if t.user_id == user_id)
            if mine >= TICKETS_PER_USER or len(self._tickets) >= TICKETS_MAX:
                from gpuplane.domain.errors import TooManyRequests
                raise TooManyRequests("too many unused stream tickets; use one or wait "
                                      f"{TICKET_TTL_S:.0f}s", TICKET_TTL_S)
            ticket = "gpt_" + secrets.token_urlsafe(32)
            self._tickets[_digest(ticket)] = _Ticket(user_id, now + TICKET_TTL_S, reauth)
            return ticket

    def redeem(self, ticket: str | None) -> _Ticket:
        """The ticket's record, once; Unauthenticated if unknown, used or expired."""
        now = self.clock()
        with self._lock:
            rec = self._tickets.pop(_digest(ticket), None) if ticket else None
        if rec is None or rec.expires_at <= now:
            raise Unauthenticated("missing, unknown, used or expired stream ticket; get a new "
                                  "one with POST /v1/stream/tickets (valid "
                                  f"{TICKET_TTL_S:.0f}s, single use)")
        return rec

    def open(self, user_id: int) -> str | None:
        with self._lock:
            if self._streams[user_id] >= STREAMS_PER_USER:
                return f"you already have {STREAMS_PER_USER} open streams; close one"
            if sum(self._streams.values()) >= STREAMS_MAX:
                return f"the server already serves {STREAMS_MAX} streams; retry later"
            self._streams[user_id] += 1
            return None

    def close(self, user_id: int) -> None:
        with self._lock:
            self._streams[user_id] -= 1
            if self._streams[user_id] <= 0:
                del self._streams[user_id]


def _digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def book(request: Request) -> StreamBook:
    state = request.app.state
    if getattr(state, "stream_book", None) is None:
        state.stream_book = StreamBook()
    return state.stream_book


class TicketOut(BaseModel):
    ticket: str = Field(description="Pass as ?ticket= to GET /v1/stream; single use.")
    expires_in: float = Field(description="Seconds the ticket stays valid.")


@router.post("/stream/tickets", status_code=201, response_model=TicketOut,
             responses=responses(429))
def create_stream_ticket(request: Request, who: Who, svc: Svc,
                         creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                         ) -> TicketOut:
    """A short-lived, single-use ticket for ``GET /v1/stream`` (an EventSource cannot send
    the Authorization header). Any authenticated caller may ask for one: the stream shows only
    what the caller could list over REST."""
    token = creds.credentials if creds else None
    keystone_token = None if token else request.headers.get("x-auth-token")
    settings, source = request.app.state.settings, client_source(request)

    def reauth() -> Principal:
        if token:
            return svc.auth.authenticate(token, source)
        keystone = svc.keystone(settings)
        if keystone is None or not keystone_token:
            raise Unauthenticated()
        return keystone.authenticate(keystone_token, source)

    return TicketOut(ticket=book(request).issue(who.user_id, reauth), expires_in=TICKET_TTL_S)


class HistorySampleOut(BaseModel):
    seq: int = Field(description="Increases by one per sample.")
    t: float = Field(description="When it was taken (Unix seconds).")
    capacity: float = Field(description="GPUs registered.")
    schedulable: float = Field(description="GPUs on ready hosts.")
    allocated: float = Field(description="GPUs held by Admitted/Running tasks.")
    free_partial: float = Field(description="Free part of partly used GPUs.")
    fragmented: float = Field(description="The placement engine's fragmentation measure (GPUs).")
    queue: int = Field(description="Workloads waiting for the scheduler.")
    tenants: dict[str, float] = Field(description="GPUs used per project (as quotas count).")


class HistoryOut(BaseModel):
    interval_s: float = Field(description="Seconds between samples.")
    max_points: int = Field(description="Samples kept (older ones are dropped).")
    last_seq: int = Field(description="Pass as ?after= to get only newer samples.")
    reset: bool = Field(description="The samples replace what the caller had.")
    samples: list[HistorySampleOut]


@router.get("/history", response_model=HistoryOut, responses=responses(404))
def get_history(request: Request, who: Who, svc: Svc,
                after: Annotated[int, Query(ge=0, le=2**62, description=(
                    "Only samples newer than this seq (last_seq of the previous answer)."))] = 0,
                ) -> dict:
    """The pool over time as the console charts it: capacity, allocation, fragmentation,
    queue length and per-tenant use, sampled by this server (in memory; it starts empty when
    the server starts). Per-tenant use is cut to the projects whose quotas you may read."""
    history = getattr(request.app.state, "history", None)
    if history is None:
        raise NotFound("this server keeps no history (it does not serve the console)",
                       code="gpuplane.history.not_kept")
    return history.view(svc.policy.visible_project_names(who), after)


_SSE = {200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
              "description": "Server-sent events: `event: whoami|fleet|workloads|tenancy`, "
                             "`data:` the view as JSON, sent when it changed; `event: "
                             "history`, the history samples not sent yet."}}


@router.get("/stream", response_class=StreamingResponse, responses={**_SSE, **responses(429)})
async def stream(request: Request, svc: Svc,
                 ticket: Annotated[str | None, Query(max_length=128, pattern=r"^[A-Za-z0-9_-]+$",
                                                     description="From POST /v1/stream/tickets."
                                                     )] = None) -> Any:
    """The console's live views as server-sent events (see the module notes)."""
    rec = book(request).redeem(ticket)
    who = await run_in_threadpool(rec.reauth)
    refused = book(request).open(who.user_id)
    if refused is not None:
        return problem_response(429, "gpuplane.stream.limit", refused, request.url.path,
                                headers={"Retry-After": "5"})
    poll_s = float(getattr(request.app.state, "console_poll_s", POLL_S))
    return _StreamResponse(_events(request, svc, who, rec, poll_s), book(request), who.user_id,
                           media_type="text/event-stream",
                           headers={"X-Accel-Buffering": "no"})


class _StreamResponse(StreamingResponse):
    """Gives the stream slot back when the response ends, however it ends."""

    def __init__(self, content: AsyncIterator[str], slots: StreamBook, user_id: int,
                 **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.slots, self.user_id = slots, user_id

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slots.close(self.user_id)


async def _events(request: Request, svc: Services, who: Principal, rec: _Ticket,
                  poll_s: float) -> AsyncIterator[str]:
    """Each poll: ``whoami`` and ``fleet`` (sent first: the overview needs only them), the
    workloads' changes, ``tenancy`` (computed beside the poll, at most every 5 times its own
    cost: usage reads every task's hours) and the history's new samples."""
    sent: dict[str, str] = {}
    started = checked = beat = time.monotonic()
    seq = 0
    work = views.Workloads()
    tenancy: asyncio.Future | None = None
    tenancy_at = tenancy_due = 0.0
    history = getattr(request.app.state, "history", None)
    visible = history_seq = None

    def event(name: str, data: Any) -> str:
        nonlocal seq, beat
        seq += 1
        beat = time.monotonic()
        return f"id: {seq}\nevent: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"

    def changed(name: str, data: dict) -> bool:
        text = json.dumps(data, separators=(",", ":"), sort_keys=True)
        if sent.get(name) == text:
            return False
        sent[name] = text
        return True

    yield f"retry: {int(poll_s * 2000)}\n\n"
    try:
        while True:
            now = time.monotonic()
            if now - started >= MAX_S or await request.is_disconnected():
                return
            if now - checked >= RECHECK_S:
                checked = now
                try:
                    who = await run_in_threadpool(rec.reauth)
                except GpuplaneError:
                    yield "event: expired\ndata: {}\n\n"
                    return
                work.reset()  # roles may have changed: send everything again
                visible = history_seq = None
            try:
                for name, view in (("whoami", views.whoami), ("fleet", views.fleet)):
                    data = await run_in_threadpool(views.guard, lambda v=view: v(svc, who))
                    if changed(name, data):
                        yield event(name, data)
                if tenancy is None and now >= tenancy_due:
                    tenancy_at = time.monotonic()
                    tenancy = asyncio.ensure_future(run_in_threadpool(
                        views.guard, lambda: views.tenancy(svc, who)))
                data = await run_in_threadpool(views.guard, lambda: work.poll(
                    svc, who, svc.workloads.now()))
                if data is not None and (data is not views.FORBIDDEN
                                         or changed("workloads", data)):
                    yield event("workloads", data)
                if tenancy is not None and tenancy.done():
                    data, tenancy = tenancy.result(), None
                    tenancy_due = time.monotonic() + 4 * (time.monotonic() - tenancy_at)
                    if changed("tenancy", data):
                        yield event("tenancy", data)
            except GpuplaneError:
                return
            if history is not None and history.last_seq != history_seq:
                if history_seq is None:
                    visible = await run_in_threadpool(svc.policy.visible_project_names, who)
                data = history.view(visible, history_seq or 0)
                history_seq = data["last_seq"]
                yield event("history", data)
            if time.monotonic() - beat >= HEARTBEAT_S:
                beat = time.monotonic()
                yield ": keep-alive\n\n"
            await asyncio.sleep(poll_s)
    finally:
        if tenancy is not None:
            tenancy.cancel()
