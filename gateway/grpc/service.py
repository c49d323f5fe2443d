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
import re
from collections.abc import Callable
from typing import Any, NoReturn

import grpc
import orjson
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from gateway.domain.errors import MalformedBody, NotReady
from gateway.domain.messages import without_credentials
from gateway.domain.records import REQUEST_ID_PATTERN
from gateway.grpc import tensors
from gateway.grpc.errors import code_for
from gateway.protocols.limits import RequestShape
from gateway.serving import answering
from gateway.serving.answering import Ask
from gateway.wiring import oip_models
from gateway.wiring.services import GatewayServices

log = logging.getLogger("gateway.grpc")
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
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
        schema = svc.variants.schema
        if schema is None:
            raise NotReady(svc.variants.load_error or "models are still loading")
        rows, ask = tensors.decode(request, RequestShape(tuple(schema.names), svc.settings.model.max_rows))
        metadata = _metadata(context)
        routing = svc.settings.routing
        answered = await answering.answer(
            svc.scorer, rows,
            Ask(forced=forced or metadata.get(routing.variant_header.lower()),
                user_key=metadata.get(routing.sticky_header.lower()),
                request_id=_request_id(request.id or None, metadata.get("x-request-id")),
                probabilities=ask.probabilities, headers=_logged(metadata, routing.log_headers)),
            timeout_ms=_timeout_ms(svc.settings.model.request_timeout_ms, context.time_remaining()), gone=None,
            on_response=self.on_response)
        outcome = answered.outcome
        shown = outcome.model_version if routing.reveal_version else None
        parameters = {"routing_reason": outcome.reason}
        if outcome.replayed:
            parameters["idempotent_replay"] = "true"
        if not outcome.logged and svc.scorer.logging_enabled:
            parameters["prediction_logged"] = "false"
        if outcome.logged and svc.receipts is not None:
            parameters["feedback_receipt"] = svc.receipts.issue(outcome.request_id, len(outcome.predictions))
        response = tensors.encode(request.model_name, shown, outcome.request_id, answered.labels,
                                  answered.probabilities, ask, parameters)
        if outcome.shadow is not None:  # the candidate's scoring, queued once this answer is on its way
            asyncio.get_running_loop().call_soon(svc.scorer.submit_shadow, outcome, answered.scored)
        return response


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The request's text metadata by lower-case key (binary ``-bin`` entries are not headers here);
    a key sent twice is one value, joined with ", " as HTTP joins a header's lines."""
    out: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _request_id(given: str | None, header: str | None) -> str | None:
    source, value = ("the request's id", given) if given is not None else ("x-request-id", header)
    if value is None:
        return None
    if not _REQUEST_ID.match(value):
        raise MalformedBody(f"{source} must be 1-128 characters from A-Z a-z 0-9 . _ : -")
    return value


def _logged(metadata: dict[str, str], names: list[str]) -> str:
    found = {name: metadata[name][:256] for name in names if name in metadata}
    return orjson.dumps(found).decode() if found else ""


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
