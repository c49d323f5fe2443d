"""POST /predict: the seed's endpoint. One row as a form, JSON object or query string; a JSON list
of row objects is a batch. The row schema is the model's signature (see /docs)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.domain.errors import MalformedBody
from gateway.domain.messages import first_line
from gateway.domain.records import REQUEST_ID_PATTERN
from gateway.http.errors import PREDICTION_STATUSES, ErrorBody, responses
from gateway.http.inference import Answered, answer, answer_headers, decoded, services, shadow_task
from gateway.http.responses import FastJSONResponse
from gateway.protocols.body import loads_body
from gateway.variants.output import Prediction

router = APIRouter()

_FORM_TYPES = ("application/x-www-form-urlencoded",)
_TRUE = ("1", "true", "yes", "on")

PREDICT_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "description": "One row (a JSON object, a form as in the seed's curl, or the query string), or a JSON "
                       "list of row objects (a batch, one routing decision for all of them). The columns are the "
                       "model signature's.",
        "content": {"application/json": {"schema": {}}, "application/x-www-form-urlencoded": {"schema": {}}},
    },
    "parameters": [
        {"name": "probabilities", "in": "query", "required": False, "schema": {"type": "boolean"},
         "description": "Also return class probabilities (classifiers with predict_proba)."},
        {"name": "X-Model-Version", "in": "header", "required": False, "schema": {"type": "string"},
         "description": "Force this variant (400 lists the valid ones if unknown). "
                        "X-Amzn-SageMaker-Target-Variant works too."},
        {"name": "X-User-ID", "in": "header", "required": False, "schema": {"type": "string"},
         "description": "Sticky key: the same user always gets the same variant."},
        {"name": "X-Request-ID", "in": "header", "required": False,
         "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN},
         "description": "Echoed back; a retry with the same id and rows returns the recorded answer."},
    ],
}


def _form(body: bytes) -> dict[str, str]:
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True))
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedBody(f"malformed form body: {exc}") from None


async def _raw_rows(request: Request) -> tuple[list[Any], bool]:
    """(rows, is_batch) from the body in its content type, the query string filling a single row."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    data: Any = {}
    if body.strip():
        if ctype in _FORM_TYPES and body.lstrip()[:1] in (b"{", b"["):
            # JSON sent with curl -d and no -H 'Content-Type: application/json' (curl then says "form"):
            # no form field starts with a brace, so it is read as the JSON it plainly is.
            data = await decoded(body, loads_body)
        elif ctype in _FORM_TYPES:
            data = await decoded(body, _form)
        elif ctype.startswith("multipart/"):
            try:
                form = await request.form()
            except Exception as exc:  # Starlette's multipart parser: a malformed or boundary-less body
                raise MalformedBody(f"malformed multipart body: {first_line(exc)}") from None
            data = {k: v for k, v in form.items() if isinstance(v, str)}
        elif ctype in ("", "application/json") or ctype.endswith("+json"):
            data = await decoded(body, loads_body)
        else:
            raise MalformedBody(
                f"unsupported content type {ctype!r}; send application/json or application/x-www-form-urlencoded")
    if isinstance(data, list):  # an empty one is refused with every protocol's zero rows, by the scorer
        return data, True
    if isinstance(data, dict):
        schema = services(request).variants.schema
        for name in schema.names if schema is not None else ():  # the query string fills what the body did not give
            if name not in data and name in request.query_params:
                data[name] = request.query_params[name]
    return [data], False


def _item(p: Prediction) -> dict[str, Any]:
    item: dict[str, Any] = {"prediction": p.label}
    if p.class_index is not None:
        item["prediction_class"] = p.class_index
    if p.probabilities is not None:
        item["probabilities"] = p.probabilities
    return item


def render(answered: Answered, batch: bool, version: str | None) -> dict[str, Any]:
    """The answer's body; ``version`` None leaves model_version out (a blind test)."""
    outcome = answered.outcome
    ids = {"model_version": version, "request_id": outcome.request_id} if version is not None else {
        "request_id": outcome.request_id}
    if batch:
        return {"predictions": [_item(p) for p in outcome.predictions], **ids}
    return {**_item(outcome.predictions[0]), **ids}


@router.post("/predict", openapi_extra=PREDICT_OPENAPI, summary="Predict with the routed model version",
             responses=responses(ErrorBody, *PREDICTION_STATUSES))
async def predict(request: Request) -> Response:
    rows, batch = await _raw_rows(request)
    probabilities = request.query_params.get("probabilities", "").lower() in _TRUE
    answered = await answer(request, rows, probabilities=probabilities)
    notes = services(request).notes(answered)
    return FastJSONResponse(render(answered, batch, notes.version), headers=answer_headers(notes),
                        background=shadow_task(request, answered))
