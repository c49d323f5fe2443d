"""Live routing changes behind a bearer token: PUT /admin/routing and POST /admin/promote.

Off unless GATEWAY_ADMIN_TOKEN is set (then the routes answer 404). No token: 401; a wrong one: 403;
the comparison is constant-time.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from gateway.domain.errors import AdminDenied
from gateway.domain.validation import reject_bool
from gateway.http.errors import ErrorBody, responses
from gateway.http.inference import services
from gateway.security.credentials import bearer, same_secret

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
    weights: dict[str, Annotated[float, BeforeValidator(reject_bool)]] | None = None
    shadow: ShadowUpdate | None = None


class Promotion(BaseModel):
    model_config = ConfigDict(extra="forbid")
    variant: str


def authorize(request: Request) -> None:
    """A dependency of every admin route: it runs before the body is read or validated, so an
    unauthenticated caller learns nothing about the API from validation errors."""
    expected = os.environ.get(TOKEN_ENV, "").strip()  # a blank token is no token: the API stays off
    if not expected:
        raise AdminDenied(404, f"admin API is off; set {TOKEN_ENV} to enable it")
    given = bearer(request.headers.get("authorization"))
    if given is None:
        raise AdminDenied(401, "send Authorization: Bearer <token>")
    if not same_secret(given, expected):
        raise AdminDenied(403, "wrong admin token")


def is_admin(request: Request) -> bool:
    """The caller sent the admin token (the operations endpoints then show what anonymous callers do
    not see: file paths and process ids)."""
    expected = os.environ.get(TOKEN_ENV, "").strip()
    given = bearer(request.headers.get("authorization"))
    return bool(expected) and given is not None and same_secret(given, expected)


router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(authorize)],
                   responses=responses(ErrorBody, 400, 401, 403, 404, 409, 413, 422))


@router.put("/routing", summary="Change mode, weights or shadow settings atomically, without a restart")
async def put_routing(request: Request, update: RoutingUpdate) -> Any:
    shadow = update.shadow.model_dump(exclude_none=True) if update.shadow else None
    await run_in_threadpool(services(request).refuse_if_rollout_active, "PUT /admin/routing")
    change = await run_in_threadpool(services(request).routing.change, mode=update.mode, weights=update.weights,
                                     shadow=shadow, source="PUT /admin/routing")
    return change.to_dict()


@router.post("/promote", summary="Send 100% of traffic to one variant and move the champion alias to it")
async def promote(request: Request, body: Promotion) -> Any:
    await run_in_threadpool(services(request).refuse_if_rollout_active, "POST /admin/promote")
    return await run_in_threadpool(services(request).promote, body.variant)
