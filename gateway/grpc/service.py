"""The six calls of the Open Inference Protocol's ``GRPCInferenceService``, answered as REST answers
them: the model's readiness and metadata from the same view (gateway/wiring/oip_models.py), and
``ModelInfer`` through the same pipeline (gateway/serving/answering.py), so that a gRPC request is
routed (weights, sticky users, forced versions, shadow, bandit, rollouts), logged and counted like
any other. The request's metadata plays the part of HTTP's headers: the routing header forces a
version (as does the message's ``model_version``), the sticky header keys the user, ``x-request-id``
names the request when the message's ``id`` does not, and ``[routing] log_headers`` are logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, NoReturn

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from gateway.domain.errors import NotReady
from gateway.domain.messages import without_credentials
from gateway.grpc import tensors
from gateway.grpc.errors import code_for
from gateway.protocols.body import logged_values
from gateway.protocols.body import request_id as checked_request_id
from gateway.protocols.limits import LARGE_BODY_BYTES
from gateway.serving import answering
from gateway.serving.answering import Ask
from gateway.wiring import oip_models
from gateway.wiring.services import GatewayServices

log = logging.getLogger("gateway.grpc")
OnResponse = Callable[[str | None, str | None, int], None]


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, services: GatewayServices, on_response: OnResponse) -> None:
        self.svc = services
        self.on_response = on_response

    async def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=self.svc.variants.ready.is_set())

    async def ServerMetadata(self, request: pb.ServerMetadataRequest,
                             context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerMetadataResponse(name=oip_models.SERVER_NAME, version=oip_models.SERVER_VERSION)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext) -> Any:
        try:
            oip_models.check_model(self.svc, request.name, request.version or None)
        except NotReady:
            return pb.ModelReadyResponse(ready=False)
        except Exception as exc:
            await _abort(context, exc)
        return pb.ModelReadyResponse(ready=True)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest,
                            context: grpc.aio.ServicerContext) -> Any:
        try:
            body = oip_models.model_metadata(self.svc, request.name, request.version or None)
        except Exception as exc:
            await _abort(context, exc)
        response = pb.ModelMetadataResponse(name=body["name"], versions=body["versions"], platform=body["platform"])
        for item in body["inputs"]:
            response.inputs.add(name=item["name"], datatype=item["datatype"], shape=item["shape"])
        for item in body["outputs"]:
            response.outputs.add(name=item["name"], datatype=item["datatype"], shape=item["shape"])
        return response

    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await self._infer(request, context)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _, status = code_for(exc)
            self.on_response(None, None, status)
            await _abort(context, exc)

    async def _infer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> Any:
        svc = self.svc
        forced = request.model_version or None
        oip_models.check_model(svc, request.model_name, forced)
        shape = svc.request_shape()
        # As REST does with a large body: decoded on a worker thread, so the event loop keeps answering.
        if request.ByteSize() > LARGE_BODY_BYTES:
            rows, ask = await asyncio.to_thread(tensors.decode, request, shape)
        else:
            rows, ask = tensors.decode(request, shape)
        metadata = _metadata(context)
        routing = svc.settings.routing
        answered = await answering.answer(
            svc.scorer, rows,
            Ask(forced=forced or _first(metadata, routing.variant_header.lower()),
                user_key=_first(metadata, routing.sticky_header.lower()),
                request_id=checked_request_id(request.id, "the request's id") if request.id else
                checked_request_id(_first(metadata, "x-request-id"), "x-request-id"),
                probabilities=ask.probabilities,
                headers=logged_values({name: metadata[name] for name in routing.log_headers if name in metadata})),
            timeout_ms=_timeout_ms(svc.settings.model.request_timeout_ms, context.time_remaining()), gone=None,
            on_response=self.on_response)
        notes = svc.notes(answered)
        parameters = notes.named("routing_reason", "idempotent_replay", "prediction_logged", "feedback_receipt")
        response = tensors.encode(request.model_name, notes.version, notes.request_id, answered.labels,
                                  answered.probabilities, ask, parameters)
        if answered.outcome.shadow is not None:  # the candidate's scoring, queued once this answer is on its way
            asyncio.get_running_loop().call_soon(svc.scorer.submit_shadow, answered.outcome, answered.scored)
        return response


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, list[str]]:
    """The request's text metadata by lower-case key, each key's values in order (binary ``-bin``
    entries are not headers here)."""
    out: dict[str, list[str]] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            out.setdefault(key, []).append(value)
    return out


def _first(metadata: dict[str, list[str]], key: str) -> str | None:
    values = metadata.get(key)
    return values[0] if values else None


def _timeout_ms(configured_ms: float, remaining_s: float | None) -> float:
    """The sooner of ``[model] request_timeout_ms`` (0: none) and the client's own deadline."""
    if remaining_s is None:
        return configured_ms
    client_ms = max(remaining_s * 1000.0, 1.0)
    return min(configured_ms, client_ms) if configured_ms else client_ms


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException) -> NoReturn:
    code, status = code_for(exc)
    if status >= 500 and code is grpc.StatusCode.INTERNAL:
        log.error("unhandled error in a gRPC call", exc_info=exc)
        message = "internal error; see the gateway log"
    else:
        message = without_credentials(str(exc))
    await context.abort(code, message)
    raise AssertionError("unreachable: abort raises")
