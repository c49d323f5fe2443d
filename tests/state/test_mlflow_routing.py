"""The shared state in MLflow's registry (gateway/mlflow_state.py), against a real `mlflow server`:
replicas are separate ledger objects with their own HTTP sessions, as separate processes would be."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace

import pytest
import requests

from gateway.domain.errors import StateConflict, StateUnavailable
from gateway.mlflow.ledger import REJECTED, MlflowLedger
from gateway.routing.spec import RoutingConfig, ShadowSection
from gateway.routing.table import RoutingTable
from gateway.state.mlflow_rollout import MlflowRolloutStore
from gateway.state.mlflow_routing import EVALUATION_TAG, MlflowRoutingStateStore
from gateway.variants.spec import VariantSpec
from stack.processes import MlflowServer, free_port

pytestmark = pytest.mark.integration  # a real `mlflow server`


def _name() -> str:
    return f"state-{uuid.uuid4().hex[:8]}"


def _config(w1: float = 0.5, uri2: str = "models:/IrisClassifier/2") -> RoutingConfig:
    return RoutingConfig(mode="weighted", variants=(VariantSpec(name="v1.0", model_uri="models:/IrisClassifier/1",
                                                                weight=w1),
                                                    VariantSpec(name="v2.0", model_uri=uri2, weight=1 - w1)),
                         shadow=ShadowSection(), salt="s")


def test_a_change_written_by_one_replica_is_read_by_another(mlflow_server: MlflowServer) -> None:
    name = _name()
    a, b = MlflowLedger(mlflow_server.url, name), MlflowLedger(mlflow_server.url, name)
    written = a.append("routing", lambda head: ({"n": 1}, "first"))
    assert written is not None and written.document == {"n": 1}
    assert b.refresh() is True
    assert b.head("routing") == written
    assert b.refresh() is False  # nothing new: no change reported
    # The registry shows the change in words.
    got = requests.get(f"{mlflow_server.url}/api/2.0/mlflow/model-versions/get",
                       params={"name": name, "version": str(written.version)}, timeout=5).json()
    assert got["model_version"]["description"] == "first"


def test_a_change_built_on_a_stale_state_is_refused_not_lost(mlflow_server: MlflowServer) -> None:
    name = _name()
    a, b = MlflowLedger(mlflow_server.url, name), MlflowLedger(mlflow_server.url, name)
    a.append("routing", lambda head: ({"n": 1}, "one"))
    b.refresh()

    def stale(head: object) -> tuple[dict[str, int], str]:
        # While b computes its change, a writes another one.
        a.append("routing", lambda h: ({"n": 2, "by": "a"}, "two by a"))
        return {"n": 2, "by": "b"}, "two by b"

    with pytest.raises(StateConflict, match="landed first"):
        b.append("routing", stale)
    for ledger in (a, b):
        ledger.refresh()
        head = ledger.head("routing")
        assert head is not None and head.document == {"n": 2, "by": "a"}
    # The refused version is marked in the registry for people reading it.
    versions = requests.get(f"{mlflow_server.url}/api/2.0/mlflow/model-versions/search",
                            params={"filter": f"name='{name}'"}, timeout=5).json()["model_versions"]
    rejected = [v for v in versions if any(t["key"] == REJECTED for t in v.get("tags", []))]
    assert len(versions) == 3 and len(rejected) == 1
    # A fresh reader agrees with both.
    fresh = MlflowLedger(mlflow_server.url, name)
    fresh.refresh()
    assert fresh.head("routing") == a.head("routing")


def test_concurrent_read_modify_writes_never_lose_an_update(mlflow_server: MlflowServer) -> None:
    """Ten replicas each add one to a counter 8 times; every write either lands or raises
    StateConflict, and the final counter equals the number that landed. (A first version of the
    ledger failed this: a write accepted and at once built upon was reported as a conflict.)"""
    name = _name()
    landed: list[int] = []
    conflicts: list[int] = []
    lock = threading.Lock()

    def replica(i: int) -> None:
        ledger = MlflowLedger(mlflow_server.url, name)
        for _ in range(8):
            try:
                ledger.append("counter", lambda h: ({"n": (h.document["n"] if h else 0) + 1}, f"+1 by {i}"))
                with lock:
                    landed.append(i)
            except StateConflict:
                with lock:
                    conflicts.append(i)

    threads = [threading.Thread(target=replica, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reader = MlflowLedger(mlflow_server.url, name)
    reader.refresh()
    head = reader.head("counter")
    assert head is not None
    assert head.document["n"] == len(landed)
    assert len(landed) + len(conflicts) == 80
    assert len(landed) >= 1
    print(f"10 replicas x 8 writes: {len(landed)} landed, {len(conflicts)} answered conflict, "
          f"counter {head.document['n']}")


def test_replicas_routing_tables_converge_and_refuse_other_variants(mlflow_server: MlflowServer) -> None:
    name = _name()
    table_a = RoutingTable(_config(), MlflowRoutingStateStore(MlflowLedger(mlflow_server.url, name)))
    table_b = RoutingTable(_config(), MlflowRoutingStateStore(MlflowLedger(mlflow_server.url, name)))
    assert table_b.origin.restored and table_b.origin.version == table_a.origin.version
    table_a.change(weights={"v1.0": 0.9, "v2.0": 0.1}, source="PUT /admin/routing")
    assert table_b.sync() is True
    assert table_b.router.weights == {"v1.0": 0.9, "v2.0": 0.1}
    assert table_b.config.config_hash == table_a.config.config_hash
    # A replica started with other variants writes them (its file changed) ...
    table_c = RoutingTable(_config(0.3, uri2="models:/IrisClassifier/1"),
                           MlflowRoutingStateStore(MlflowLedger(mlflow_server.url, name)))
    assert table_c.origin.source.endswith("(variants changed)")
    # ... and the others keep the routing they can serve, and say why.
    assert table_a.sync() is False
    assert table_a.router.weights == {"v1.0": 0.9, "v2.0": 0.1}
    status = table_a.state_status()
    assert status["backend"] == "mlflow" and status["reachable"] is True
    assert "restart it with the same config file" in status["not_installed"]
    # The standalone controller serves nothing: it follows whatever the shared state holds, and never
    # writes its own file's routing.
    follower = RoutingTable(_config(), MlflowRoutingStateStore(MlflowLedger(mlflow_server.url, name)),
                            adopt_file=False)
    assert follower.config.config_hash == table_c.config.config_hash
    assert follower.origin.version == table_c.origin.version


def test_an_admin_change_on_a_stale_replica_answers_conflict(mlflow_server: MlflowServer) -> None:
    name = _name()
    ledger_b = MlflowLedger(mlflow_server.url, name)
    table_a = RoutingTable(_config(), MlflowRoutingStateStore(MlflowLedger(mlflow_server.url, name)))
    table_b = RoutingTable(_config(), MlflowRoutingStateStore(ledger_b))

    original = ledger_b.refresh

    def slow_refresh() -> bool:  # b reads, then a's change lands before b writes
        changed = original()
        if not getattr(slow_refresh, "done", False):
            slow_refresh.done = True  # type: ignore[attr-defined]
            table_a.change(weights={"v1.0": 0.2, "v2.0": 0.8}, source="a")
        return changed

    ledger_b.refresh = slow_refresh  # type: ignore[method-assign]
    with pytest.raises(StateConflict):
        table_b.change(weights={"v1.0": 0.7, "v2.0": 0.3}, source="b")
    ledger_b.refresh = original  # type: ignore[method-assign]
    assert table_b.sync() is True
    assert table_b.router.weights == {"v1.0": 0.2, "v2.0": 0.8}
    # The gateway's own changes re-apply on the newer state instead.
    slow_refresh.done = False  # type: ignore[attr-defined]
    ledger_b.refresh = slow_refresh  # type: ignore[method-assign]
    table_b.change(weights={"v1.0": 0.7, "v2.0": 0.3}, source="b", retry=True)
    assert table_b.router.weights == {"v1.0": 0.7, "v2.0": 0.3}


def test_an_unreachable_mlflow_keeps_the_last_state_and_says_so() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    ledger = MlflowLedger(dead, "x", timeout_s=1)
    table = RoutingTable(_config(0.75), MlflowRoutingStateStore(ledger))
    assert table.router.weights == {"v1.0": 0.75, "v2.0": 0.25}  # the config file's routing
    with pytest.raises(StateUnavailable, match="unreachable"):
        table.sync()
    status = table.state_status()
    assert status["reachable"] is False and "unreachable" in status["last_error"]
    with pytest.raises(StateUnavailable):
        table.change(weights={"v1.0": 0.1, "v2.0": 0.9}, source="admin")
    assert table.router.weights == {"v1.0": 0.75, "v2.0": 0.25}


def test_a_non_http_tracking_uri_is_refused() -> None:
    with pytest.raises(ValueError, match="http"):
        MlflowLedger("sqlite:///x.db", "x")


def test_the_rollout_lives_in_the_ledger_and_its_evaluation_in_a_tag(mlflow_server: MlflowServer) -> None:
    from gateway.rollout.controller import RolloutController
    from gateway.rollout.observations import RolloutObserver
    from gateway.rollout.spec import RolloutSpec, RolloutState

    name = _name()
    ledger = MlflowLedger(mlflow_server.url, name)
    table = RoutingTable(_config(), MlflowRoutingStateStore(ledger))
    store = MlflowRolloutStore(ledger)
    controller = RolloutController(store, table, RolloutObserver(), lambda v: {"moved": False},
                                   counts=lambda rid: ({}, 0))
    record = controller.start(RolloutSpec(control="v1.0", candidate="v2.0", steps=[0.1, 1.0]), "test")
    assert table.router.weights == {"v1.0": 0.9, "v2.0": 0.1}
    other = MlflowLedger(mlflow_server.url, name)
    other.refresh()
    seen = MlflowRolloutStore(other).load()
    assert seen is not None and seen.rollout_id == record.rollout_id and seen.state is RolloutState.RUNNING
    versions_before = other._last_seen
    store.update(lambda cur: replace(cur, evaluation={"at": 1.0, "minima": {"srm": 0.5}}) if cur else None)
    other.refresh()
    assert other._last_seen == versions_before  # an evaluation is not a version
    assert '"srm":0.5' in (other.model_tag(EVALUATION_TAG) or "")
    reader = MlflowRolloutStore(other)
    reader.refresh_evaluation()  # what its background thread does every second
    assert reader.load().evaluation["minima"] == {"srm": 0.5}  # type: ignore[union-attr]
    controller.pause("test")
    other.refresh()
    assert MlflowRolloutStore(other).load().state is RolloutState.PAUSED  # type: ignore[union-attr]


def test_the_ledgers_location_never_shows_credentials() -> None:
    from gateway.mlflow.ledger import ledger_location

    shown = ledger_location("https://bob:secret@mlflow.example:8443/", "gateway-routing-state")
    assert shown == "https://mlflow.example:8443#models/gateway-routing-state"


def test_reading_the_rollout_never_waits_for_mlflow() -> None:
    """/metrics and GET /rollout read the rollout from memory: with MLflow hanging on every request,
    ``load`` answers at once, while the evaluation is read in the background."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    release = threading.Event()
    asked = threading.Event()

    class Hanging(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.set()
            release.wait(30)
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Hanging)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        store = MlflowRolloutStore(MlflowLedger(f"http://127.0.0.1:{server.server_port}", _name(), timeout_s=20))
        loaded = threading.Thread(target=store.load)
        loaded.start()
        assert asked.wait(10)  # the background read reached "MLflow", which hangs...
        loaded.join(5)
        assert not loaded.is_alive()  # ...and load did not wait for it
    finally:
        release.set()
        server.shutdown()
