"""/v1/stream: live updates for the web console, as server-sent events.

An ``EventSource`` cannot send an ``Authorization`` header, so the token is presented once,
in a POST: ``POST /v1/stream/tickets`` (bearer token as on every /v1 route) answers a random
ticket that is valid for ``TICKET_TTL_S`` seconds and for one use; ``GET
/v1/stream?ticket=...`` trades it for the stream. A ticket is kept in this process's memory
only, so it works on the process that issued it (``gpuplane up`` is one process).

The stream computes each *view* of the console (``whoami``, ``fleet``, ``workloads``,
``tenancy``) with the same service calls the REST routes use, as the ticket's principal, every
``poll_s`` seconds; it sends a view (``event: <view>``, ``data: <json>``) when its JSON differs
from what this stream sent last. So a tenant's stream carries exactly what the tenant could list
over REST, and a client is sent only what changed. Every ``RECHECK_S`` the token is
authenticated again: a revoked token, or changed role bindings, take effect within that time;
a stream ends after ``MAX_S`` (the console then asks for a new ticket and reconnects).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field

from gpuplane.api.deps import Svc, Who, bearer, client_source
from gpuplane.api.problems import problem_response, responses
from gpuplane.api.schemas import (GpuListItemOut, HostOut, QuotaOut, UserOut, WorkloadOut)
from gpuplane.domain.errors import GpuplaneError
from gpuplane.service import Principal, Services, Unauthenticated

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
RECENT_FINISHED = 50       # finished workloads the ``workloads`` view keeps
QUEUE_DETAIL_MAX = 200     # pending workloads whose queue position is computed per poll
PAGE = 1000
TERMINAL = ("Succeeded", "Failed", "Cancelled", "Lost")


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


_SSE = {200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
              "description": "Server-sent events: `event: whoami|fleet|workloads|tenancy`, "
                             "`data:` the view as JSON, sent when it changed."}}


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
    sent: dict[str, str] = {}
    started = checked = beat = time.monotonic()
    seq = 0
    yield f"retry: {int(poll_s * 2000)}\n\n"
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
        try:
            views = await run_in_threadpool(snapshot, svc, who)
        except GpuplaneError:
            return
        for name, data in views.items():
            text = json.dumps(data, separators=(",", ":"), sort_keys=True)
            if sent.get(name) != text:
                sent[name] = text
                seq += 1
                yield f"id: {seq}\nevent: {name}\ndata: {text}\n\n"
                beat = now
        if now - beat >= HEARTBEAT_S:
            beat = now
            yield ": keep-alive\n\n"
        await asyncio.sleep(poll_s)


# -- views --------------------------------------------------------------------------------------

def _all(list_page: Callable[[int | None, int], Any]) -> Iterator[Any]:
    after = None
    while True:
        page = list_page(after, PAGE)
        yield from page.items
        if page.next_after is None:
            return
        after = page.next_after


def _guard(fn: Callable[[], dict]) -> dict:
    """A view the principal may not read is ``{"forbidden": true}``, not an error."""
    try:
        return fn()
    except GpuplaneError as exc:
        if exc.code in ("gpuplane.auth.forbidden",) or exc.code.endswith(".not_found"):
            return {"forbidden": True}
        raise


def snapshot(svc: Services, who: Principal) -> dict[str, dict]:
    """Every view as ``who`` may see it, through the service calls of the REST routes."""
    return {"whoami": _guard(lambda: _whoami(svc, who)),
            "fleet": _guard(lambda: _fleet(svc, who)),
            "workloads": _guard(lambda: _workloads(svc, who)),
            "tenancy": _guard(lambda: _tenancy(svc, who))}


def _whoami(svc: Services, who: Principal) -> dict:
    return UserOut.of(svc.tenancy.whoami(who)).model_dump(mode="json")


def _fleet(svc: Services, who: Principal) -> dict:
    """Hosts (as GET /v1/hosts) with each GPU's allocated milli-GPU (as GET /v1/gpus)."""
    hosts = [HostOut.of(h).model_dump(mode="json")
             for h in _all(lambda a, n: svc.inventory.list_hosts(who, a, n, None))]
    alloc = {}
    for item in _all(lambda a, n: svc.inventory.list_gpus(who, a, n, None)):
        g = GpuListItemOut.of(item)
        alloc[(g.host, g.index)] = g.allocated
    for h in hosts:
        for g in h["gpus"]:
            g["allocated"] = alloc.get((h["name"], g["index"]), 0.0)
    return {"hosts": hosts}


def _workloads(svc: Services, who: Principal) -> dict:
    """Active workloads, the latest finished ones, and each pending one's queue standing (as
    GET /v1/workloads and GET /v1/workloads/{w}/pending)."""
    items = [WorkloadOut.of(w).model_dump(mode="json")
             for w in _all(lambda a, n: svc.workloads.list_workloads(who, a, n, None, None))]
    done = [w["id"] for w in items if w["status"]["phase"] in TERMINAL]
    drop = set(done[:-RECENT_FINISHED]) if len(done) > RECENT_FINISHED else set()
    items = [w for w in items if w["id"] not in drop]
    pending = {}
    for w in [w for w in items if w["status"]["phase"] == "Pending"][:QUEUE_DETAIL_MAX]:
        try:
            pending[w["id"]] = svc.workloads.pending_info(who, w["id"])
        except GpuplaneError:
            continue  # deleted meanwhile
    return {"items": items, "pending": pending}


def _tenancy(svc: Services, who: Principal) -> dict:
    """Quotas (as GET /v1/quotas) and usage (as GET /v1/usage), hours rounded to 0.1 so the
    view changes when use does, not every poll."""
    quotas = [QuotaOut.of(q).model_dump(mode="json", exclude={"updated_at"})
              for q in _all(lambda a, n: svc.policy.list_quotas(who, a, n, None))]
    usage = svc.usage.usage(who, None, None, None)
    return {"quotas": quotas, "usage": _round(usage)}


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 1)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value
