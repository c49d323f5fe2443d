"""The routing and rollout state shared by gateway replicas on several machines, kept in the MLflow
Model Registry that every replica already reaches.

One registered model (``[state] registered_model``, default ``gateway-routing-state``) is the ledger.
Each change is one model version; its tags hold the new document (``state.kind``: routing or rollout,
``state.parent``: the version it was built on, ``state.document``: JSON), its description says what
changed in words. No consensus protocol of our own: the order is the registry's version numbering,
which the tracking server's database assigns one at a time (the next number under the registered
model's row, with a unique key on (name, version)). Every reader applies one rule to that sequence:

    a version is accepted iff its parent is the newest accepted version of its kind before it.

So a writer that read version H and built a change on it creates its version V with parent H; if
another change of the same kind was numbered between H and V, V is not accepted (it is tagged
``state.rejected`` for people reading the registry) and the write raises ``StateConflict``: the
admin API answers 409, nothing is lost silently. Readers poll for versions numbered after the last
they saw: one search request per poll, empty when nothing changed.

A replica that cannot reach MLflow keeps the state it last read and says so (``status()``). Versions
of the ledger must not be deleted by hand: readers that had not seen them would disagree.

Plain HTTP to MLflow's REST API (``/api/2.0/mlflow/...``) with a short timeout and no retries: a poll
loop must fail fast and try again, where the Python client retries for minutes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from gateway.domain.contract import is_http_uri, utc_iso
from gateway.domain.errors import StateConflict, StateUnavailable
from gateway.domain.messages import without_credentials

log = logging.getLogger("gateway.state")

KIND, PARENT, DOCUMENT, REJECTED = "state.kind", "state.parent", "state.document", "state.rejected"
SOURCE = "gateway-state:/{kind}"


@dataclass(frozen=True, slots=True)
class Entry:
    version: int  # the registry's version number
    kind: str
    document: dict[str, Any]


def ledger_location(tracking_uri: str, name: str) -> str:
    """Where the ledger is, for /readyz and logs: the tracking URI without any credentials in it."""
    return f"{without_credentials(tracking_uri).rstrip('/')}#models/{name}"


class MlflowLedger:
    """The accepted head of each kind, as read from the registry; thread-safe."""

    def __init__(self, tracking_uri: str, name: str, timeout_s: float = 5.0, local_copy: Path | None = None) -> None:
        """``local_copy``: a file that keeps the heads last read, for a start while MLflow is down."""
        if not is_http_uri(tracking_uri):
            raise ValueError(f"state.backend = mlflow needs an http(s) tracking server; mlflow.tracking_uri is "
                             f"{tracking_uri!r}")
        self.tracking_uri = tracking_uri.rstrip("/")
        self.name = name
        self.location = ledger_location(tracking_uri, name)
        self.timeout_s = timeout_s
        self._http = requests.Session()
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        if token:
            self._http.headers["Authorization"] = f"Bearer {token}"
        elif os.environ.get("MLFLOW_TRACKING_USERNAME"):
            self._http.auth = (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ.get("MLFLOW_TRACKING_PASSWORD", ""))
        self._lock = threading.RLock()
        self._heads: dict[str, Entry] = {}
        self._last_seen = 0  # the newest version number read (accepted or not)
        self._accepted: dict[int, Entry] = {}  # the versions the last refresh accepted
        self._created = False
        self.reachable = False
        self.last_ok_at: float | None = None
        self.last_error: str | None = None
        self.local_copy = local_copy
        self.read_once = False  # the ledger was read from MLflow since this process started
        self.from_local_copy: dict[str, Any] | None = None  # the copy in use until then: saved_at, versions

    # -- REST ---------------------------------------------------------------------------------------

    def _call(self, method: str, endpoint: str, **kwargs: Any) -> dict[str, Any]:
        url = f"{self.tracking_uri}/api/2.0/mlflow/{endpoint}"
        try:
            response = self._http.request(method, url, timeout=self.timeout_s, **kwargs)
        except requests.RequestException as exc:
            self._failed(f"MLflow unreachable at {self.tracking_uri}: {type(exc).__name__}")
            raise StateUnavailable(str(self.last_error)) from None
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {"message": response.text[:200]}
        if response.status_code >= 500:
            self._failed(f"MLflow answered {response.status_code} to {endpoint}: {body.get('message', '')}"[:300])
            raise StateUnavailable(str(self.last_error))
        self._ok()
        if response.status_code >= 400:
            body["_status"] = response.status_code
        return body

    def _ok(self) -> None:
        self.reachable = True
        self.last_ok_at = time.time()

    def _failed(self, message: str) -> None:
        if self.reachable or self.last_error != message:
            log.warning("shared state: %s; keeping the state last read", message)
        self.reachable = False
        self.last_error = message

    def _ensure_model(self) -> None:
        if self._created:
            return
        body = self._call("POST", "registered-models/create", json={
            "name": self.name, "description": "The routing and rollout state shared by the A/B gateway's replicas: "
            "each version is one change (tags state.kind, state.parent, state.document). Do not delete versions.",
            "tags": [{"key": "gateway.state_ledger", "value": "true"}]})
        if body.get("_status") and body.get("error_code") != "RESOURCE_ALREADY_EXISTS":
            raise StateUnavailable(f"MLflow refused to create the registered model {self.name!r}: "
                                   f"{body.get('message', body)}")
        self._created = True

    def _versions_after(self, after: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"filter": f"name='{self.name}' AND version_number > {after}",
                                      "order_by": "version_number ASC", "max_results": 1000}
            if token:
                params["page_token"] = token
            body = self._call("GET", "model-versions/search", params=params)
            if body.get("_status"):
                raise StateUnavailable(f"MLflow refused to list {self.name}: {body.get('message', body)}")
            found.extend(body.get("model_versions", []))
            token = body.get("next_page_token")
            if not token:
                return sorted(found, key=lambda v: int(v["version"]))

    # -- reading ------------------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Read the versions numbered since the last poll; True if a head changed. Raises
        StateUnavailable (the heads stay as they were) when MLflow cannot be reached."""
        with self._lock:
            self._ensure_model()
            changed = self._apply(self._versions_after(self._last_seen))
            if changed or not self.read_once:
                self._save_copy()
            self.read_once = True
            self.from_local_copy = None
            return changed

    def _save_copy(self) -> None:
        if self.local_copy is None:
            return
        data = {"saved_at": time.time(), "location": self.location, "last_seen": self._last_seen,
                "heads": {k: {"version": e.version, "document": e.document} for k, e in self._heads.items()}}
        tmp = self.local_copy.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(data, separators=(",", ":")))
            os.replace(tmp, self.local_copy)
        except OSError as exc:  # a full or read-only disk: the copy is only for a start during an outage
            log.warning("shared state: local copy %s not saved: %s", self.local_copy, exc)

    def load_local_copy(self) -> bool:
        """Take the heads from the local copy of the state last read (a start while MLflow is down).
        The next read from MLflow goes on from there: versions are never rewritten. False when there
        is no usable copy, or the ledger was read already."""
        with self._lock:
            if self.read_once or self.local_copy is None or not self.local_copy.exists():
                return False
            try:
                data = json.loads(self.local_copy.read_text())
                if data.get("location") != self.location:
                    return False  # another ledger's copy
                heads = {k: Entry(int(h["version"]), k, h["document"]) for k, h in data["heads"].items()}
                last_seen = int(data["last_seen"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("shared state: local copy %s unreadable: %s", self.local_copy, exc)
                return False
            self._heads, self._last_seen = heads, last_seen
            self.from_local_copy = {"saved_at": utc_iso(float(data["saved_at"])), "versions_seen": last_seen}
            log.warning("shared state: MLflow unreachable at start-up; starting from the local copy saved %s "
                        "(version %d), until MLflow answers", self.from_local_copy["saved_at"], last_seen)
            return True

    def _apply(self, versions: list[dict[str, Any]]) -> bool:
        changed = False
        self._accepted = {}
        for v in versions:
            number = int(v["version"])
            if number <= self._last_seen:
                continue
            self._last_seen = number
            tags = {t["key"]: t["value"] for t in v.get("tags", [])}
            kind = tags.get(KIND)
            if kind is None or DOCUMENT not in tags:
                continue
            head = self._heads.get(kind)
            if int(tags.get(PARENT, "0")) != (head.version if head else 0):
                continue  # built on a state that was no longer the newest: not accepted
            try:
                document = json.loads(tags[DOCUMENT])
            except ValueError:
                continue
            entry = Entry(number, kind, document)
            self._heads[kind] = self._accepted[number] = entry
            changed = True
        return changed

    def head(self, kind: str) -> Entry | None:
        with self._lock:
            return self._heads.get(kind)

    # -- writing ------------------------------------------------------------------------------------

    def append(self, kind: str, change: Callable[[Entry | None], tuple[dict[str, Any], str] | None]) -> Entry | None:
        """Read the newest state, apply ``change`` (returns (document, description) or None for no
        change), write it as a new version. Returns the accepted entry (or the current one when there
        is nothing to change); raises StateConflict if another change of this kind landed first and
        StateUnavailable if MLflow is unreachable."""
        with self._lock:
            self.refresh()
            base = self._heads.get(kind)
            new = change(base)
            if new is None:
                return base
            document, description = new
            parent = base.version if base else 0
            body = self._call("POST", "model-versions/create", json={
                "name": self.name, "source": SOURCE.format(kind=kind), "description": description[:5000],
                "tags": [{"key": KIND, "value": kind}, {"key": PARENT, "value": str(parent)},
                         {"key": DOCUMENT, "value": json.dumps(document, separators=(",", ":"))}]})
            if body.get("_status"):
                raise StateUnavailable(f"MLflow refused the state change: {body.get('message', body)}")
            mine = int(body["model_version"]["version"])
            accepted: dict[int, Entry] = {}
            for _ in range(5):  # read until our own version is seen (at once, on one database)
                self.refresh()
                accepted.update(self._accepted)
                if self._last_seen >= mine:
                    break
                time.sleep(0.1)
            else:
                raise StateUnavailable(f"the state change was written as version {mine} of {self.name}, but it "
                                       "cannot be read back yet: whether it applies is not known; read the state")
            if mine in accepted:  # it may not be the head: another change built on it may be numbered after
                return accepted[mine]
            head = self._heads.get(kind)
            winner = next((n for n in sorted(accepted) if accepted[n].kind == kind and n < mine), None) or (
                head.version if head is not None else "?")
            self._reject(mine, winner)
            raise StateConflict(f"the {kind} state changed while this change was being written (version "
                                f"{winner} landed first; this one, version {mine}, was not applied); read the "
                                "state again and retry", version=winner)

    def _reject(self, version: int, winner: object) -> None:
        with contextlib.suppress(StateUnavailable):  # informational: readers reject it by the rule anyway
            self._call("POST", "model-versions/set-tag", json={
                "name": self.name, "version": str(version), "key": REJECTED,
                "value": f"built on a stale state; version {winner} landed first"})

    def set_model_tag(self, key: str, value: str) -> None:
        """A registered-model tag: for state that one writer owns and that changes too often to be a
        version (the rollout's last evaluation)."""
        body = self._call("POST", "registered-models/set-tag", json={"name": self.name, "key": key, "value": value})
        if body.get("_status"):
            raise StateUnavailable(f"MLflow refused tag {key}: {body.get('message', body)}")

    def model_tag(self, key: str) -> str | None:
        body = self._call("GET", "registered-models/get", params={"name": self.name})
        if body.get("_status"):
            return None
        tags = {t["key"]: t["value"] for t in body.get("registered_model", {}).get("tags", [])}
        return tags.get(key)

    def status(self) -> dict[str, Any]:
        now = time.time()
        return {"backend": "mlflow", "location": self.location, "reachable": self.reachable,
                "last_read_age_seconds": round(now - self.last_ok_at, 3) if self.last_ok_at else None,
                "last_error": self.last_error if not self.reachable else None,
                "versions_seen": self._last_seen, "read_since_start": self.read_once,
                "from_local_copy": self.from_local_copy}
