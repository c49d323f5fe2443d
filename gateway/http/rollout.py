"""The guarded rollout over HTTP: GET /rollout for everyone, and start / pause / resume / abort behind
the admin token (POST /admin/rollout...)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from gateway.domain.messages import redacted
from gateway.http.admin import authorize
from gateway.http.errors import ErrorBody, responses
from gateway.http.inference import services
from gateway.rollout.controller import describe
from gateway.rollout.spec import RolloutSpec

router = APIRouter(tags=["rollout"])
admin_router = APIRouter(prefix="/admin/rollout", tags=["admin"], dependencies=[Depends(authorize)],
                         responses=responses(ErrorBody, 400, 401, 403, 404, 409, 413, 422))


@router.get("/rollout", summary="The rollout: state, step, candidate weight, each guardrail's estimate, "
            "interval and p-value, and the history of decisions", responses=responses(ErrorBody, 404))
async def get_rollout(request: Request) -> Any:
    controller = services(request).rollout_controller()
    return redacted(await run_in_threadpool(controller.describe))


@admin_router.post("", status_code=201, summary="Start a guarded rollout of a candidate against a control")
async def start_rollout(request: Request, spec: RolloutSpec) -> Any:
    controller = services(request).rollout_controller()
    return describe(await run_in_threadpool(controller.start, spec, "POST /admin/rollout"))


@admin_router.post("/pause", summary="Stop taking decisions; the weights stay as they are")
async def pause_rollout(request: Request) -> Any:
    controller = services(request).rollout_controller()
    return describe(await run_in_threadpool(controller.pause, "POST /admin/rollout/pause"))


@admin_router.post("/resume", summary="Take decisions again")
async def resume_rollout(request: Request) -> Any:
    controller = services(request).rollout_controller()
    return describe(await run_in_threadpool(controller.resume, "POST /admin/rollout/resume"))


@admin_router.post("/abort", summary="Stop the rollout and send all the candidate's traffic to the control")
async def abort_rollout(request: Request) -> Any:
    controller = services(request).rollout_controller()
    return describe(await run_in_threadpool(controller.abort, "POST /admin/rollout/abort"))
