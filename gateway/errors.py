"""The domain's exceptions. The HTTP layer maps each to one status in one table."""

from __future__ import annotations


class GatewayError(Exception):
    """Base class: every error the gateway reports to a client derives from it."""

    def __init__(self, message: str, **detail: object) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class InvalidFeatures(GatewayError):
    """The request's features are missing, not numbers, or out of range."""

    def __init__(self, message: str, errors: list[dict[str, object]]) -> None:
        super().__init__(message, errors=errors)
        self.errors = errors


class MalformedBody(GatewayError):
    """The body cannot be parsed in its declared content type."""


class UnknownVariant(GatewayError):
    """A forced version names no configured variant."""

    def __init__(self, requested: str, valid: list[str]) -> None:
        super().__init__(f"unknown model version {requested!r}; valid versions: {', '.join(valid)}",
                         requested=requested, valid=valid)


class NotReady(GatewayError):
    """The variants are still loading."""


class UnknownRequest(GatewayError):
    """No answered prediction with this request id is in the spool."""


class InvalidFeedback(GatewayError):
    """A true label that is not an iris class."""


class SpoolUnavailable(GatewayError):
    """The prediction could not be recorded durably, and the policy is to refuse unlogged answers."""


class ModelLoadError(GatewayError):
    """A variant's model could not be loaded at start-up."""
