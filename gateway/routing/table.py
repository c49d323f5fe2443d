"""The routing in force, and live changes to it (admin API, SIGHUP, promotion, the rollout).

A change is validated like the start-up config, written to the shared routing state (when there is
one), then swapped in with one assignment: every request sees either the old router or the new one,
never a mix. Other worker processes pick the change up from the shared state within one poll.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import ValidationError

from gateway.domain.contract import utc_iso
from gateway.domain.errors import InvalidRoutingChange, StateConflict, StateUnavailable, UnknownVariant
from gateway.domain.messages import error_location
from gateway.routing.allocation import Segment, initial, quantise, rebalance
from gateway.routing.router import Router
from gateway.routing.spec import RoutingConfig, RoutingMode, ShadowSection, validate_routing
from gateway.routing.store import RoutingStore, StoredRouting
from gateway.variants.spec import VariantSpec

log = logging.getLogger("gateway.routing")

FROM_FILE = "config file"
CONFLICT_RETRIES = 5  # for changes the gateway makes itself (start-up, SIGHUP, the rollout)


@dataclass(frozen=True, slots=True)
class RoutingChange:
    """One change made here, as its listeners (the MLflow change log) and the admin API see it."""

    source: str
    old_config_hash: str
    config_hash: str
    mode: str
    weights: dict[str, float]
    version: int
    shadow: dict[str, Any] | None
    mirror: bool
    details: dict[str, Any] | None = None  # a rollout decision's statistics

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RoutingOrigin:
    """Where the routing in force came from: shown in /variants."""

    version: int
    source: str
    changed_at: float
    restored: bool = False  # adopted from the shared state at start-up, not from the config file


class RoutingTable:
    def __init__(self, config: RoutingConfig, store: RoutingStore | None = None, adopt_file: bool = True,
                 listeners: Sequence[Callable[[RoutingChange], None]] = ()) -> None:
        """``adopt_file=False``: follow the shared routing and never write the config file's (the
        standalone rollout controller, which only moves weights). ``listeners`` hear each change made
        here (the MLflow change log)."""
        self._store = store
        self._serves = adopt_file  # a gateway serves its variants; the controller only follows the state
        self._lock = threading.Lock()
        self.listeners = tuple(listeners)
        self._router = Router(config)
        self.origin = RoutingOrigin(0, FROM_FILE, time.time())
        self.refused: str | None = None  # why the shared routing in force elsewhere is not installed here
        if store is not None:
            try:
                if adopt_file:
                    self._start_from(store, config)
                else:
                    self.sync()
            except StateUnavailable as exc:
                self._start_offline(store, config, exc)

    def _start_offline(self, store: RoutingStore, file_config: RoutingConfig, problem: Exception) -> None:
        """The shared state is unreachable at start-up: the routing last read from it (a local copy)
        when it serves the same variants, else the config file's, until the state can be read."""
        stored = store.offline_start() if self._serves else None
        if stored is not None and _variant_uris(stored.config) == _variant_uris(file_config):
            self._router = Router(stored.config, version=stored.version)
            self.origin = RoutingOrigin(stored.version, f"{stored.source} (local copy; the shared state was "
                                        "unreachable at start-up)", stored.changed_at, restored=True)
            log.warning("shared routing state not reachable at start-up (%s): serving its local copy, version %d, "
                        "weights %s, until it is", problem, stored.version, self._router.weights_tag)
            return
        log.error("shared routing state not reachable at start-up (%s): serving the config file's routing until "
                  "it is%s", problem, "" if stored is None else " (its local copy names other variants)")

    def _start_from(self, store: RoutingStore, file_config: RoutingConfig) -> None:
        """Resume the stored routing, unless the config file's routing changed since it was applied
        (then the file wins: an edited file and a restart mean "use this")."""
        file_hash = file_config.config_hash

        def decide(stored: StoredRouting | None) -> tuple[RoutingConfig, str, str] | None:
            if stored is None:
                return file_config, FROM_FILE, file_hash
            if _variant_uris(stored.config) != _variant_uris(file_config):
                return file_config, f"{FROM_FILE} (variants changed)", file_hash
            if stored.file_hash != file_hash:
                return file_config, f"{FROM_FILE} (changed since it was last applied)", file_hash
            return None

        store.poll()
        before = store.version()
        stored = _retrying(lambda: store.update(decide))
        assert stored is not None
        self._router = Router(stored.config, version=stored.version)
        restored = stored.version == before and before > 0
        self.origin = RoutingOrigin(stored.version, stored.source, stored.changed_at, restored)
        if restored:
            log.info("routing resumed from %s: version %d, set by %s, config %s", store.location, stored.version,
                     stored.source, stored.config.config_hash)

    @property
    def router(self) -> Router:
        return self._router

    @property
    def config(self) -> RoutingConfig:
        return self._router.config

    @property
    def names(self) -> list[str]:
        return list(self._router.names)

    @property
    def shared(self) -> bool:
        return self._store is not None

    @property
    def poll_interval_s(self) -> float:
        return self._store.poll_interval_s if self._store is not None else 0.25

    def describe_origin(self) -> dict[str, Any]:
        o = self.origin
        return {"source": o.source, "changed_at": utc_iso(o.changed_at),
                "version": o.version, "restored_at_start": o.restored, "worker_pid": os.getpid(),
                "shared_state": self._store.location if self._store is not None else None,
                "not_installed": self.refused}

    def state_status(self) -> dict[str, Any]:
        """The shared state's health for /readyz and /metrics: where it is, whether it was read."""
        if self._store is None:
            return {"backend": None, "reachable": None}
        return {**self._store.status(), "version": self.origin.version, "not_installed": self.refused}

    def change(self, *, mode: str | None = None, weights: Mapping[str, float] | None = None,
               shadow: Mapping[str, Any] | None = None, salt: str | None = None, mirror: bool | None = None,
               source: str = "", file_hash: str | None = None, details: dict[str, Any] | None = None,
               retry: bool = False, allocation: tuple[tuple[str, int, int], ...] | None = None) -> RoutingChange:
        """Apply a change on top of the routing in force (the shared one, when there is one).
        ``details`` (a rollout decision's statistics) travel with the change to its listeners. When
        another replica's change lands between the read and the write, StateConflict (409), unless
        ``retry`` (the gateway's own changes): then the change is applied again on the newer state."""
        with self._lock:
            old = self._router.config
            if self._store is None:
                new = _changed(old, mode, weights, shadow, salt, mirror, allocation)
                self._router = Router(new, version=self.origin.version + 1)
                self.origin = RoutingOrigin(self.origin.version + 1, source, time.time())
            else:
                def update(stored: StoredRouting | None) -> tuple[RoutingConfig, str, str]:
                    base = stored.config if stored is not None else old
                    return (_changed(base, mode, weights, shadow, salt, mirror, allocation), source,
                            file_hash or (stored.file_hash if stored is not None else ""))

                store = self._store
                stored = _retrying(lambda: store.update(update)) if retry else store.update(update)
                assert stored is not None
                old = self._router.config
                new = stored.config
                self._router = Router(new, version=stored.version)
                self.origin = RoutingOrigin(stored.version, source, stored.changed_at)
        change = RoutingChange(source, old.config_hash, new.config_hash, new.mode, dict(self._router.weights),
                               self.origin.version,
                               new.shadow.model_dump() if new.mode == RoutingMode.SHADOW or new.mirror else None,
                               new.mirror, details)
        log.info("routing changed by %s: config %s -> %s, mode %s, weights %s", source or "?",
                 old.config_hash, new.config_hash, new.mode, self._router.weights_tag)
        for on_change in self.listeners:
            on_change(change)
        return change

    def sync(self) -> bool:
        """Install a newer shared routing made by another process; True if one was installed."""
        if self._store is None:
            return False
        self._store.poll()
        if self._store.version() <= self.origin.version:
            return False
        with self._lock:
            stored = self._store.load()
            if stored is None or stored.version <= self.origin.version:
                return False
            old = self._router.config
            if self._serves and _variant_uris(stored.config) != _variant_uris(old):
                # Another replica runs other variants (a config rollout in progress): routing to models
                # this process has not loaded would fail every request. Keep the routing in force.
                refused = (f"version {stored.version} by {stored.source} names variants "
                           f"{_variant_uris(stored.config)}, this replica serves {_variant_uris(old)}; restart it "
                           "with the same config file")
                if refused != self.refused:
                    log.error("shared routing not installed: %s", refused)
                self.refused = refused
                return False
            self.refused = None
            self._router = Router(stored.config, version=stored.version)
            self.origin = RoutingOrigin(stored.version, stored.source, stored.changed_at)
        if old.config_hash != stored.config.config_hash:
            log.info("routing changed by %s (read from the shared state): config %s -> %s, weights %s", stored.source,
                     old.config_hash, stored.config.config_hash, self._router.weights_tag)
        return True

    def promote(self, variant: str, move_champion: Callable[[str], dict[str, Any]],
                source: str | None = None) -> dict[str, Any]:
        """All traffic to one variant (local, in force at once), then the registry's ``champion``
        alias to its model version by ``move_champion`` (through the outbox: it never waits long)."""
        names = self.names
        if variant not in names:
            raise UnknownVariant(variant, names)
        change = self.change(mode="weighted", weights={n: 1.0 if n == variant else 0.0 for n in names},
                             source=source or f"POST /admin/promote {variant}")
        return {"routing": change.to_dict(), "registry": move_champion(variant)}


def _retrying(write: Callable[[], StoredRouting | None]) -> StoredRouting | None:
    for attempt in range(CONFLICT_RETRIES):
        try:
            return write()
        except StateConflict:
            if attempt == CONFLICT_RETRIES - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _variant_uris(config: RoutingConfig) -> list[tuple[str, str]]:
    return [(v.name, v.model_uri) for v in config.variants]


def _changed(old: RoutingConfig, mode: str | None, weights: Mapping[str, float] | None,
             shadow: Mapping[str, Any] | None, salt: str | None, mirror: bool | None = None,
             allocation: tuple[tuple[str, int, int], ...] | None = None) -> RoutingConfig:
    names = [v.name for v in old.variants]
    unknown = sorted(set(weights or {}) - set(names))
    if unknown:
        raise InvalidRoutingChange(f"weights: unknown variant(s) {unknown}; configured: {names}")
    try:
        variants = tuple(VariantSpec.model_validate({**v.model_dump(), "weight": (weights or {}).get(
            v.name, v.weight)}) for v in old.variants)
        new_shadow = ShadowSection.model_validate({**old.shadow.model_dump(), **(shadow or {})})
        new_mode = mode or old.mode
        new = RoutingConfig(mode=new_mode, variants=variants, shadow=new_shadow,  # type: ignore[arg-type]
                            salt=old.salt if salt is None else salt, mirror=old.mirror if mirror is None else mirror,
                            allocation=bandit_allocation(new_mode, old, variants, allocation))
        validate_routing(new.mode, new.variants, new.shadow, new.mirror)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InvalidRoutingChange(f"{error_location(err['loc'])}: {err['msg']}") from None
    except ValueError as exc:
        raise InvalidRoutingChange(str(exc)) from None
    return new


def bandit_allocation(mode: str, old: RoutingConfig, variants: Sequence[VariantSpec],
                      given: tuple[Segment, ...] | None = None) -> tuple[Segment, ...] | None:
    """The ranges for a routing config of this ``mode`` and ``variants`` (their weights), made from the
    ``old`` config's ranges: ``given`` as they are (the reweigher computed them), else the weights
    rebalanced over the old ranges (or cut in order, when there were none)."""
    if mode != RoutingMode.BANDIT:
        return None
    if given is not None:
        return given
    counts = quantise({v.name: v.weight for v in variants})
    if old.allocation and {a for a, _, _ in old.allocation} <= {v.name for v in variants}:
        return rebalance(old.allocation, counts)
    return initial(counts)
