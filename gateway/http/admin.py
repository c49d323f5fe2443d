"""Live routing changes behind a bearer token: PUT /admin/routing and POST /admin/promote.

Off unless GATEWAY_ADMIN_TOKEN is set (then the routes answer 404). No token: 401; a wrong one: 403;
the comparison is constant-time.
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from gateway.http.inference import services

router = APIRouter(prefix="/admin", tags=["admin"])
TOKEN_ENV = "GATEWAY_ADMIN_TOKEN"


class ShadowUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    primary: str | None = None
    candidate: str | None = None
    sample_rate: float | None = Field(None, ge=0, le=1)


class RoutingUpdate(BaseModel):
    """Only what is given changes; weights are per variant name."""

    model_config = ConfigDict(extra="forbid")
    mode: str | None = None
    weights: dict[str, float] | None = None
    shadow: ShadowUpdate | None = None


class Promotion(BaseModel):
    model_config = ConfigDict(extra="forbid")
    variant: str


def _authorize(request: Request) -> JSONResponse | None:
    expected = os.environ.get(TOKEN_ENV, "")
    if not expected:
        return JSONResponse({"error": "NotFound", "message": f"admin API is off; set {TOKEN_ENV} to enable it"},
                            status_code=404)
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        return JSONResponse({"error": "Unauthorized", "message": "send Authorization: Bearer <token>"},
                            status_code=401, headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return JSONResponse({"error": "Forbidden", "message": "wrong admin token"}, status_code=403)
    return None


@router.put("/routing", summary="Change mode, weights or shadow settings atomically, without a restart")
async def put_routing(request: Request, update: RoutingUpdate) -> Any:
    if (denied := _authorize(request)) is not None:
        return denied
    shadow = update.shadow.model_dump(exclude_none=True) if update.shadow else None
    change = await run_in_threadpool(services(request).routing.change, mode=update.mode, weights=update.weights,
                                     shadow=shadow, source="PUT /admin/routing")
    return change


@router.post("/promote", summary="Send 100% of traffic to one variant and move the champion alias to it")
async def promote(request: Request, body: Promotion) -> Any:
    if (denied := _authorize(request)) is not None:
        return denied
    return await run_in_threadpool(services(request).promote, body.variant)
