"""/witness: this installation as a C2SP tlog-witness for other logs (optional anchoring).

A log (another gpuplane installation) posts each new signed checkpoint with a consistency
proof from the last one this witness cosigned; the witness checks the log's signature (its
keys are in the ``witness`` policy, set by a global admin) and the proof, remembers the new
size, and answers with its cosignature line. No token is needed: the log's signature is the
authentication, as the protocol specifies, and unknown logs are refused. Like ``/healthz`` it
lives outside ``/v1`` (every ``/v1`` route needs a token): its paths are the protocol's.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from gpuplane.api.deps import Svc
from gpuplane.api.problems import responses

router = APIRouter(prefix="/witness", tags=["audit"], responses=responses(400, 422))


@router.post("/add-checkpoint", response_class=PlainTextResponse,
             responses={**responses(403, 404), 409: {
                 "description": "The witness holds another size: the body is that size.",
                 "content": {"text/x.tlog.size": {"schema": {"type": "string"}}}},
                 200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                       "description": "The cosignature line."}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "text/plain": {"schema": {"type": "string"}}}}})
async def add_checkpoint(request: Request, svc: Svc) -> PlainTextResponse:
    """``old <size>``, the consistency proof (base64 lines), a blank line, the signed
    checkpoint: cosigned if it extends what this witness last saw of that log."""
    from gpuplane.governance.witness import WitnessConflict

    body = (await request.body()).decode("utf-8", errors="replace")
    try:
        line = svc.witness.add_checkpoint(request.app.state.settings, body)
    except WitnessConflict as exc:
        return PlainTextResponse(f"{exc.recorded_size}\n", status_code=409,
                                 media_type="text/x.tlog.size")
    return PlainTextResponse(line)


@router.get("/key", response_class=PlainTextResponse)
def witness_key(request: Request, svc: Svc) -> PlainTextResponse:
    """This witness's cosignature verifier key, for the logs that want its cosignatures."""
    return PlainTextResponse(svc.witness.verifier_key(request.app.state.settings) + "\n")
