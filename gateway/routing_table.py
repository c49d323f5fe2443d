"""The routing in force, and live changes to it (admin API, SIGHUP, promotion).

A change is validated like the start-up config, then swapped in with one assignment: every request
sees either the old router or the new one, never a mix.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from gateway.errors import InvalidRoutingChange, UnknownVariant
from gateway.exceptions import error_location, first_line
from gateway.routing import Router
from gateway.settings import RoutingConfig, ShadowSection, VariantSpec, validate_routing

log = logging.getLogger("gateway.routing")


class RoutingTable:
    def __init__(self, config: RoutingConfig) -> None:
        self._router = Router(config)
        self._lock = threading.Lock()
        self.listeners: list[Callable[[dict[str, Any]], None]] = []  # called with each change

    @property
    def router(self) -> Router:
        return self._router

    @property
    def config(self) -> RoutingConfig:
        return self._router.config

    @property
    def names(self) -> list[str]:
        return list(self._router.names)

    def change(self, *, mode: str | None = None, weights: Mapping[str, float] | None = None,
               shadow: Mapping[str, Any] | None = None, salt: str | None = None, source: str = "") -> dict[str, Any]:
        with self._lock:
            old = self._router.config
            names = [v.name for v in old.variants]
            unknown = sorted(set(weights or {}) - set(names))
            if unknown:
                raise InvalidRoutingChange(f"weights: unknown variant(s) {unknown}; configured: {names}")
            try:
                variants = tuple(VariantSpec.model_validate({**v.model_dump(), "weight": (weights or {}).get(
                    v.name, v.weight)}) for v in old.variants)
                new_shadow = ShadowSection.model_validate({**old.shadow.model_dump(), **(shadow or {})})
                new = RoutingConfig(mode=mode or old.mode, variants=variants, shadow=new_shadow,  # type: ignore[arg-type]
                                    salt=old.salt if salt is None else salt)
                validate_routing(new.mode, new.variants, new.shadow)
            except ValidationError as exc:
                err = exc.errors()[0]
                raise InvalidRoutingChange(f"{error_location(err['loc'])}: {err['msg']}") from None
            except ValueError as exc:
                raise InvalidRoutingChange(str(exc)) from None
            self._router = Router(new)
        change = {"source": source, "old_config_hash": old.config_hash, "config_hash": new.config_hash,
                  "mode": new.mode, "weights": self._router.weights,
                  "shadow": new.shadow.model_dump() if new.mode == "shadow" else None}
        log.info("routing changed by %s: config %s -> %s, mode %s, weights %s", source or "?",
                 old.config_hash, new.config_hash, new.mode, self._router.weights_tag)
        for on_change in self.listeners:
            on_change(change)
        return change

    def promote(self, variant: str, registered: tuple[str, str] | None, tracking_uri: str) -> dict[str, Any]:
        """All traffic to one variant, and the registry's ``champion`` alias to its model version
        (``registered`` = (model name, version), None when the variant is not a registry version)."""
        names = self.names
        if variant not in names:
            raise UnknownVariant(variant, names)
        change = self.change(mode="weighted", weights={n: 1.0 if n == variant else 0.0 for n in names},
                             source=f"POST /admin/promote {variant}")
        alias: dict[str, Any] = {"alias": "champion", "moved": False}
        if registered is None:
            alias["reason"] = "the variant's model is not a registry model version"
            return {"routing": change, "registry": alias}
        try:
            from mlflow import MlflowClient

            client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            client.set_registered_model_alias(registered[0], "champion", registered[1])
            alias.update(moved=True, model=registered[0], version=registered[1])
            log.info("champion alias of %s moved to version %s (%s)", registered[0], registered[1], variant)
        except Exception as exc:
            alias["reason"] = f"MLflow refused or is unreachable: {first_line(exc, 200)}"
            log.error("promote %s: routing changed but the champion alias was not moved: %s", variant,
                      alias["reason"])
        return {"routing": change, "registry": alias}
