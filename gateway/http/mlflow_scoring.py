"""MLflow's scoring protocol: POST /invocations, GET /ping, /health, /version; so that MLflow's
scoring client and ``mlflow models serve`` users switch by changing the URL."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from gateway.http.errors import PREDICTION_STATUSES, MlflowErrorBody, responses
from gateway.http.inference import answer, answer_headers, decoded, request_shape, services, shadow_task
from gateway.http.responses import FastJSONResponse
from gateway.mlflow.client import mlflow_version
from gateway.protocols import mlflow_scoring

router = APIRouter(tags=["mlflow scoring protocol"])


@router.post("/invocations", summary="MLflow scoring protocol: dataframe_split, dataframe_records, instances, "
                                     "inputs (JSON, with params) or text/csv",
             responses=responses(MlflowErrorBody, *PREDICTION_STATUSES))
async def invocations(request: Request) -> Response:
    shape = request_shape(request)
    rows, params = await decoded(await request.body(), mlflow_scoring.decode, request.headers.get("content-type", ""),
                                 shape)
    probabilities = bool(params.pop(mlflow_scoring.PROBABILITIES_PARAM, False))
    answered = await answer(request, rows, probabilities=probabilities, params=params)
    body = mlflow_scoring.encode(answered.labels, answered.probabilities if probabilities else None)
    return FastJSONResponse(body, headers=answer_headers(services(request).notes(answered)),
                            background=shadow_task(request, answered))


@router.get("/ping", summary="MLflow scoring protocol: 200 once every variant is loaded",
            response_class=PlainTextResponse, responses={503: {"description": "models are loading"}})
@router.get("/health", summary="MLflow scoring protocol: 200 once every variant is loaded",
            response_class=PlainTextResponse, responses={503: {"description": "models are loading"}})
async def ping(request: Request) -> Response:
    # MLflow's scoring server answers an empty line; its client looks at the status only.
    ready = services(request).variants.ready.is_set()
    return PlainTextResponse("\n" if ready else "models are loading\n", status_code=200 if ready else 503)


@router.get("/version", summary="MLflow scoring protocol: the MLflow version", response_class=PlainTextResponse)
async def version() -> Response:
    return Response(mlflow_version(), media_type="text/plain")
