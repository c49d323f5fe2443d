"""The application factory: a FastAPI app whose lifespan starts and stops one ``runtime.Gateway``,
its routers, error handlers and limits, and the OpenAPI schema from the models' signature."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from gateway.config.settings import Settings, load_settings
from gateway.http.admin import router as admin_router
from gateway.http.errors import install_error_handlers
from gateway.http.limits import FeedbackRate, RequestLimits
from gateway.http.mlflow_scoring import router as mlflow_scoring_router
from gateway.http.oip import router as oip_router
from gateway.http.predict import router as predict_router
from gateway.http.rollout import admin_router as rollout_admin_router
from gateway.http.rollout import router as rollout_router
from gateway.http.routes import router
from gateway.variants.model_loader import ModelLoader
from gateway.wiring.gateway import Gateway
from gateway.wiring.services import GatewayServices

log = logging.getLogger("gateway")


def create_app(settings: Settings, *, on_fatal: Callable[[str], None] | None = None,
               loader: ModelLoader | None = None, config_path: str | None = None,
               load_before_serving: bool = False) -> FastAPI:
    """Build the gateway. ``on_fatal`` is called with one line if the models cannot be loaded.
    With ``config_path``, SIGHUP re-reads that file and applies its routing section. With
    ``load_before_serving`` the server accepts no connection until the models are loaded (a worker
    that replaces another must not take its share of traffic only to answer 503)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway = Gateway(settings, loader=loader, config_path=config_path, on_fatal=on_fatal,
                          on_loaded=lambda: setattr(app, "openapi_schema", None))  # the row schema is known now
        gateway.start()
        app.state.gateway = gateway
        app.state.services = gateway.services
        app.state.stats = gateway.stats
        app.state.metrics = gateway.metrics
        grpc_server = None
        if settings.grpc.port is not None:  # imported only when served: grpc and its stubs cost 0.17 s a start
            from gateway.grpc.server import GrpcServer

            grpc_server = GrpcServer(settings, gateway.services, gateway.metrics.on_response)
        if load_before_serving:
            await run_in_threadpool(gateway.load_models)
        else:
            gateway.load_in_background()
        try:
            if grpc_server is not None:
                await grpc_server.start()
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(settings.spool.shutdown_grace_seconds)
            await run_in_threadpool(gateway.stop)

    app = FastAPI(
        title="A/B model gateway",
        version="0.1.0",
        description="Routes predictions between MLflow-registered model versions and logs every prediction "
                    "to MLflow off the request path. The request schema is the models' signature.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(predict_router)
    app.include_router(mlflow_scoring_router)
    app.include_router(oip_router)
    app.include_router(router)
    app.include_router(admin_router)
    app.include_router(rollout_router)
    app.include_router(rollout_admin_router)
    _openapi_from_signature(app)
    limits = settings.http
    app.add_middleware(FeedbackRate)  # inside RequestLimits: a 431 or 413 is answered before it counts
    app.add_middleware(RequestLimits, max_body_bytes=int(limits.max_body_mb * 1024 * 1024),  # type: ignore[arg-type]
                       max_header_bytes=int(limits.max_header_kb * 1024),
                       read_timeout=limits.body_read_timeout_seconds)
    return app


def _openapi_from_signature(app: FastAPI) -> None:
    """/docs shows the model's own columns: the row schema is put in once the variants are loaded."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        services: GatewayServices | None = getattr(app.state, "services", None)
        schema = services.variants.schema if services is not None else None
        if schema is None:
            return spec  # not cached: asked again once the models are loaded
        row = schema.json_schema()
        row.pop("title", None)
        spec.setdefault("components", {}).setdefault("schemas", {})["Row"] = {"title": "Row", **row}
        body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
        ref = {"$ref": "#/components/schemas/Row"}
        batch = {"type": "array", "items": ref, "minItems": 1, "maxItems": services.settings.model.max_rows}
        body["application/json"] = {"schema": {"oneOf": [ref, batch]}, "example": schema.example_row()}
        body["application/x-www-form-urlencoded"] = {"schema": ref}
        for param in spec["paths"]["/predict"]["post"].get("parameters", []):
            if param["name"] == services.settings.routing.variant_header:
                param["schema"] = {"type": "string", "enum": services.routing.names}
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def app_from_env() -> FastAPI:
    """Factory for `python -m gateway --workers N`: each worker process builds its own app from
    GATEWAY_CONFIG (the parent has already validated it and filled the model cache)."""
    import os

    path = os.environ["GATEWAY_CONFIG"]
    settings = load_settings(path)

    def fatal(message: str) -> None:
        log.error("worker %d cannot serve: %s", os.getpid(), message)
        os._exit(3)

    return create_app(settings, on_fatal=fatal, config_path=path, load_before_serving=True)
