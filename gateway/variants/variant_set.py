"""The set of loaded variants: loaded together at start-up, checked to take one input, then ready.
It answers what every protocol asks of the models: the input schema, the kind, the class labels."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence

from gateway.domain.errors import SchemaMismatch
from gateway.variants.labelling import agree_on_labels
from gateway.variants.model_loader import LoadedVariant, ModelLoader
from gateway.variants.output import ModelKind
from gateway.variants.schema import Bounds, ModelSchema
from gateway.variants.spec import VariantSpec

log = logging.getLogger("gateway.variants")


class VariantSet(Mapping[str, LoadedVariant]):
    """Empty until ``load`` succeeds; then a read-only mapping of name to variant. ``ready`` is set by
    the gateway once the variants can take requests (their batchers started), not by ``load``."""

    def __init__(self) -> None:
        self._loaded: dict[str, LoadedVariant] = {}
        self.schema: ModelSchema | None = None  # the variants' shared input, with the configured bounds
        self.kind: ModelKind | None = None
        self.ready = threading.Event()
        self.load_error: str | None = None

    def load(self, loader: ModelLoader, specs: Sequence[VariantSpec], bounds: Mapping[str, Bounds]) -> None:
        """Load every variant and check that they take the same input, are of one kind, and label their
        classes one way (labelling.py)."""
        loaded: dict[str, LoadedVariant] = {}
        for spec in specs:
            variant = loader.load(spec)
            log.info("variant %s loaded from %s (%s, %s %s, registry version %s) in %.2fs", spec.name,
                     spec.model_uri, variant.source, variant.flavor, variant.kind, variant.registry_version,
                     variant.load_seconds)
            loaded[spec.name] = variant
        first, *others = loaded.values()
        for other in others:
            diff = first.schema.difference(other.schema)
            if diff is not None:
                raise SchemaMismatch(f"variants {first.name} ({first.spec.model_uri}) and {other.name} "
                                     f"({other.spec.model_uri}) take different inputs: {diff}")
            if other.kind is not first.kind:
                raise SchemaMismatch(f"variant {first.name} is a {first.kind} but {other.name} is a {other.kind}; "
                                     "set [model] kind if one of them was detected wrongly")
        names = agree_on_labels(loaded)
        if names is not None:
            log.info("the variants answer with the class names %s", names)
        self.schema = first.schema.with_bounds(bounds)
        self.kind = first.kind
        self._loaded = loaded

    def fail(self, error: Exception) -> None:
        self.load_error = str(error)

    @property
    def labels(self) -> list[str | int] | None:
        """The classes a classifier answers with, when its variants know them."""
        for v in self._loaded.values():
            if v.decoder.labels:
                return v.decoder.labels
        return None

    def registered(self, name: str) -> tuple[str, str] | None:
        """(registered model name, version) of a variant served from the registry, else None."""
        loaded = self._loaded.get(name)
        return ((loaded.registered_name, loaded.registry_version)
                if loaded is not None and loaded.registered_name and loaded.registry_version else None)

    def __getitem__(self, name: str) -> LoadedVariant:
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded)

    def __len__(self) -> int:
        return len(self._loaded)
