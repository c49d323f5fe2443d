"""The domain's exceptions. Each carries the HTTP status it answers with (``status``); the HTTP layer
(gateway/http/errors.py) turns any of them into its protocol's error body in one handler."""

from __future__ import annotations


class GatewayError(Exception):
    """Base class: every error the gateway reports to a client derives from it."""

    status: int = 500
    retry_after_s: int | None = None  # a 503's Retry-After (1 s unless the error knows better)

    def __init__(self, message: str, **detail: object) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class InvalidFeatures(GatewayError):
    """The request's rows do not fit the model's input schema: a column missing, of the wrong type, or
    out of its configured bounds. ``errors`` names each row (in a batch) and column."""

    status = 422

    def __init__(self, message: str, errors: list[dict[str, object]]) -> None:
        super().__init__(message, errors=errors)
        self.errors = errors


class MalformedBody(GatewayError):
    """The body cannot be parsed in its declared content type."""

    status = 400


class UnknownVariant(GatewayError):
    """A forced version names no configured variant."""

    status = 400

    def __init__(self, requested: str, valid: list[str]) -> None:
        super().__init__(f"unknown model version {requested!r}; valid versions: {', '.join(valid)}",
                         requested=requested, valid=valid)


class NotReady(GatewayError):
    """The variants are still loading."""

    status = 503


class UnknownRequest(GatewayError):
    """No answered prediction with this request id is in the spool."""

    status = 404


class InvalidFeedback(GatewayError):
    """A true label that is not one of the model's classes (or not a number, for a regressor)."""

    status = 422


class TooManyRows(GatewayError):
    """A batch larger than ``[model] max_rows``; ``rows`` None when it was counted only as far as the
    limit (a large body read as a stream)."""

    status = 413

    def __init__(self, rows: int | None, limit: int) -> None:
        counted = f"{rows} rows" if rows is not None else f"more than {limit} rows"
        super().__init__(f"{counted} in one request; the limit is {limit} ([model] max_rows)",
                         rows=rows, limit=limit)


class TooManyColumns(GatewayError):
    """A request with more columns (or OIP inputs) than the model's signature has."""

    status = 422

    def __init__(self, given: int, columns: list[str], where: str) -> None:
        super().__init__(f"{where} has {given} columns; the model takes {len(columns)}: {', '.join(columns[:20])}"
                         + (" ..." if len(columns) > 20 else ""), field=where, given=given, columns=len(columns))


class UnknownModel(GatewayError):
    """An Open Inference Protocol model name that is not this gateway's."""

    status = 404


class NoProbabilities(GatewayError):
    """Probabilities were asked for, and the variant that answers has no way to give them (a regressor,
    or a model without predict_proba): refused rather than answered without them."""

    status = 400


class ModelFailure(GatewayError):
    """The model raised on rows that passed validation; only the requests of that call fail."""

    status = 500


class VariantSaturated(GatewayError):
    """The variant's queue is at ``[batching] max_queue_rows``: the request is refused at once rather
    than queued behind work it would wait for past its deadline."""

    status = 503

    def __init__(self, variant: str, queued: int, limit: int, wait_s: float) -> None:
        super().__init__(f"variant {variant} is saturated: {queued} rows wait for it (the limit is {limit}, "
                         "[batching] max_queue_rows); retry later", variant=variant, queued_rows=queued)
        self.retry_after_s = max(1, min(60, round(wait_s + 0.5)))


class RequestTimeout(GatewayError):
    """The variant did not answer within ``[model] request_timeout_ms``. Queued work is cancelled and
    never logged; a model call already running is finished, and its answer is neither sent nor logged."""

    status = 504

    def __init__(self, variant: str, request_id: str, timeout_ms: float) -> None:
        super().__init__(f"variant {variant} did not answer request {request_id} within {timeout_ms:g} ms "
                         "([model] request_timeout_ms); it was cancelled and not logged",
                         variant=variant, request_id=request_id)


class ClientGone(GatewayError):
    """The client closed its connection before the answer: the work is cancelled and not logged. No
    one reads this answer; 499 is the status proxies log for it."""

    status = 499


class SpoolUnavailable(GatewayError):
    """The prediction could not be recorded durably, and the policy is to refuse unlogged answers."""

    status = 503


class ModelLoadError(GatewayError):
    """A variant's model could not be loaded at start-up."""

    status = 500


class SchemaMismatch(ModelLoadError):
    """A model has no usable signature, or the variants' input schemas differ."""


class InvalidRoutingChange(GatewayError):
    """A live routing change that the start-up config would have refused too."""

    status = 422


class ConflictingRequest(GatewayError):
    """The request id was used before for different rows."""

    status = 409

    def __init__(self, request_id: str) -> None:
        super().__init__(f"request id {request_id!r} was already used for a different prediction",
                         request_id=request_id)


class AdminDenied(GatewayError):
    """The admin API is off (404), or the bearer token is missing (401) or wrong (403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ConflictingLabel(GatewayError):
    """A second, different true label for a prediction: the first label stored wins."""

    status = 409


class InvalidRollout(GatewayError):
    """A rollout that names an unknown variant, steps that do not increase in (0, 1], or a negative
    threshold; the message names the key."""

    status = 422


class RolloutConflict(GatewayError):
    """A second rollout while one runs, or a command that does not apply to the rollout's state."""

    status = 409


class NoRollout(GatewayError):
    """No rollout has been started on this gateway."""

    status = 404


class NoBandit(GatewayError):
    """The gateway does not route by a bandit (routing.mode is not "bandit")."""

    status = 404


class StateConflict(GatewayError):
    """Another replica changed the shared state between this change's read and its write."""

    status = 409


class StateUnavailable(GatewayError):
    """The shared state (in MLflow) could not be read or written: a change is not applied."""

    status = 503


class FeedbackDenied(GatewayError):
    """A label without a credential (401), or with a wrong token or a receipt that does not cover it (403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status



# Not the domain's, but a client can cause them: JSON nested past Python's recursion limit, and lone
# UTF-16 surrogates (valid JSON escapes, not encodable text) reaching an encoder.
FOREIGN_STATUS: dict[type[Exception], int] = {RecursionError: 400, UnicodeEncodeError: 400}


def status_for(exc: BaseException) -> int:
    """The HTTP status an exception answers with (500 for one nobody expected); the gRPC service maps
    the same status to its code (gateway/grpc/errors.py)."""
    if isinstance(exc, GatewayError):
        return exc.status
    for cls in type(exc).__mro__:
        if cls in FOREIGN_STATUS:
            return FOREIGN_STATUS[cls]
    return 500
