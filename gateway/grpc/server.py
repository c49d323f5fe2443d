"""The gRPC server beside the HTTP app: same process, same event loop, same services.

It serves the inference service and gRPC's standard health service, for Kubernetes' gRPC probes:
the overall status (service ``""``) is SERVING while the process runs (liveness), and
``inference.GRPCInferenceService`` turns SERVING once every variant is loaded (readiness), as
``/readyz`` does. Under ``--workers N`` each worker binds the same port (SO_REUSEPORT, gRPC's
default on Linux) and the kernel spreads the connections between them.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2_grpc

from gateway.config.settings import Settings
from gateway.grpc.service import InferenceService, OnResponse
from gateway.wiring.services import GatewayServices

log = logging.getLogger("gateway.grpc")

SERVICE_NAME = "inference.GRPCInferenceService"
_SERVING, _NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


class GrpcBindError(RuntimeError):
    """The configured address cannot be bound (in use, or not this machine's)."""


class GrpcServer:
    def __init__(self, settings: Settings, services: GatewayServices, on_response: OnResponse) -> None:
        self.settings = settings
        self.services = services
        self.address = f"{settings.grpc.host}:{settings.grpc.port}"
        max_bytes = int(settings.http.max_body_mb * 1024 * 1024)
        self.server = grpc.aio.server(options=[("grpc.max_receive_message_length", max_bytes),
                                               ("grpc.max_send_message_length", -1),
                                               ("grpc.so_reuseport", 1)])
        self.health = health.aio.HealthServicer()
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(services, on_response),
                                                                    self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._ready_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            self.server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise GrpcBindError(f"cannot serve gRPC on {self.address} ([grpc] host and port): {exc}") from None
        await self.health.set(SERVICE_NAME, _NOT_SERVING)
        await self.server.start()
        self._ready_task = asyncio.get_running_loop().create_task(self._serving_once_loaded())
        log.info("serving the Open Inference Protocol over gRPC on %s", self.address)

    async def _serving_once_loaded(self) -> None:
        ready = self.services.variants.ready
        while not ready.is_set():
            await asyncio.sleep(0.1)
        await self.health.set(SERVICE_NAME, _SERVING)

    async def stop(self, grace_seconds: float) -> None:
        """Refuse new calls, let those in flight finish for up to ``grace_seconds``."""
        if self._ready_task is not None:
            self._ready_task.cancel()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_seconds)
