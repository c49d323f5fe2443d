"""The Open Inference Protocol over REST (KServe v2, MLServer, Triton): health, metadata and infer.

``{name}`` is the variants' registered model name or ``[model] name``; ``/versions/{variant}`` forces
that variant. Errors are ``{"error": ...}`` (see gateway/http/errors.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gateway.http.errors import PREDICTION_STATUSES, OipErrorBody, responses
from gateway.http.inference import (
    answer,
    answer_headers,
    decoded,
    request_id_of,
    request_shape,
    services,
    shadow_task,
)
from gateway.http.responses import FastJSONResponse
from gateway.protocols import oip
from gateway.protocols.limits import RequestShape
from gateway.wiring import oip_models
from gateway.wiring.oip_models import SERVER_NAME, SERVER_VERSION, check_model

router = APIRouter(prefix="/v2", tags=["open inference protocol"])


@router.get("", summary="Server metadata")
async def server_metadata() -> dict[str, object]:
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": ["binary_tensor_data"]}


@router.get("/health/live", summary="Server liveness")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", summary="Server readiness: 200 once every variant is loaded",
            responses={503: {"description": "models are loading"}})
async def ready(request: Request) -> JSONResponse:
    ok = services(request).variants.ready.is_set()
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


_MODEL_ERRORS = responses(OipErrorBody, 400, 404, 503)


@router.get("/models/{name}", summary="Model metadata: the signature's inputs and the outputs",
            responses=_MODEL_ERRORS)
async def model_metadata(request: Request, name: str) -> dict[str, object]:
    return _metadata(request, name, None)


@router.get("/models/{name}/versions/{variant}", summary="Model metadata of one variant", responses=_MODEL_ERRORS)
async def variant_metadata(request: Request, name: str, variant: str) -> dict[str, object]:
    return _metadata(request, name, variant)


def _metadata(request: Request, name: str, variant: str | None) -> dict[str, object]:
    return oip_models.model_metadata(services(request), name, variant)


@router.get("/models/{name}/ready", summary="Model readiness", responses=_MODEL_ERRORS)
async def model_ready(request: Request, name: str) -> JSONResponse:
    check_model(services(request), name)
    return JSONResponse({"name": name, "ready": True})


@router.get("/models/{name}/versions/{variant}/ready", summary="Variant readiness", responses=_MODEL_ERRORS)
async def variant_ready(request: Request, name: str, variant: str) -> JSONResponse:
    check_model(services(request), name, variant)
    return JSONResponse({"name": name, "ready": True})


@router.post("/models/{name}/infer", summary="Inference, routed like every other protocol",
             responses=responses(OipErrorBody, 404, *PREDICTION_STATUSES))
async def infer(request: Request, name: str) -> Response:
    return await _infer(request, name, None)


@router.post("/models/{name}/versions/{variant}/infer", summary="Inference by one forced variant",
             responses=responses(OipErrorBody, 404, *PREDICTION_STATUSES))
async def infer_variant(request: Request, name: str, variant: str) -> Response:
    return await _infer(request, name, variant)


def _decode(body: bytes, header_length: str | None, shape: RequestShape) -> tuple[dict[str, Any], list[Any]]:
    payload, binary = oip.split_binary(body, header_length, shape)
    return payload, oip.decode_inputs(payload, binary, shape)


async def _infer(request: Request, name: str, variant: str | None) -> Response:
    svc = services(request)
    check_model(svc, name, variant)
    shape = request_shape(request)
    payload, rows = await decoded(await request.body(), _decode, request.headers.get(oip.HEADER_LENGTH), shape)
    requested = oip.requested_outputs(payload)
    probabilities = oip.wants_probabilities(payload)
    answered = await answer(request, rows, probabilities=probabilities, forced=variant,
                            request_id=request_id_of(request, payload.get("id") or None))
    notes = svc.notes(answered)
    body = oip.encode(name, notes.version, notes.request_id, answered.labels,
                      answered.probabilities if probabilities else None, requested)
    headers = answer_headers(notes)
    background = shadow_task(request, answered)
    binary_body = oip.binary_outputs(payload, body)
    if binary_body is not None:
        content, header_length = binary_body
        headers[oip.HEADER_LENGTH] = str(header_length)
        return Response(content, media_type="application/octet-stream", headers=headers, background=background)
    return FastJSONResponse(body, headers=headers, background=background)
