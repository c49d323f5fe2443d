"""What the Open Inference Protocol says about the served model, for REST and gRPC alike: which
names it answers to, whether it is ready, and its metadata (the signature's inputs, the outputs)."""

from __future__ import annotations

from typing import Any

from gateway.domain.errors import NotReady, UnknownModel, UnknownVariant
from gateway.protocols import oip
from gateway.variants.output import ModelKind
from gateway.wiring.services import GatewayServices

SERVER_NAME, SERVER_VERSION = "ab-gateway", "0.1.0"


def check_model(svc: GatewayServices, name: str, variant: str | None = None) -> None:
    """NotReady while the models load; UnknownModel for a name this gateway does not serve;
    UnknownVariant for a version it does not route to."""
    if not svc.variants.ready.is_set():
        raise NotReady(svc.variants.load_error or "models are still loading")
    known = {svc.model_name(), *([svc.settings.model.name] if svc.settings.model.name else [])}
    if name not in known:
        raise UnknownModel(f"unknown model {name!r}; this gateway serves {sorted(known)}", model=name)
    if variant is not None and variant not in svc.routing.names:
        raise UnknownVariant(variant, svc.routing.names)


def model_metadata(svc: GatewayServices, name: str, variant: str | None) -> dict[str, Any]:
    """The model's metadata as the protocol's REST body has it (gRPC builds its message from it)."""
    check_model(svc, name, variant)
    variants = svc.variants
    assert variants.schema is not None
    labels = variants.labels or []
    output = "FP64" if variants.kind is ModelKind.REGRESSOR else oip.datatype_of(labels) if labels else "BYTES"
    has_proba = any(v.has_probabilities for v in variants.values())
    return oip.metadata(name, [variant] if variant else svc.routing.names,
                        [(c.name, c.oip_datatype) for c in variants.schema.columns], output,
                        len(labels) if has_proba and labels else None)
