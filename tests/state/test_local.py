"""The shared routing state: every table on one state file converges on the same routing, changes
made concurrently by different processes all land, and a restart resumes the stored routing unless
the config file's routing changed."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.domain.errors import InvalidRoutingChange
from gateway.routing.table import RoutingTable
from gateway.spool.sqlite import SqliteFile
from gateway.state.local import FILE_NAME, RoutingStateStore
from tests.harness.strategies import routing_config


def table(path: Path, weights: list[float] | None = None, salt: str = "iris-ab") -> RoutingTable:
    """A worker process's view: its own connection to the shared file."""
    return RoutingTable(routing_config(weights or [0.5, 0.5], salt), RoutingStateStore(SqliteFile(path)))


def test_a_change_in_one_worker_reaches_the_other_on_its_next_poll(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    a, b = table(path), table(path)
    change = a.change(weights={"v0.0": 1.0, "v1.0": 0.0}, source="PUT /admin/routing")
    assert b.router.weights == {"v0.0": 0.5, "v1.0": 0.5}  # not yet polled
    assert b.sync() is True
    assert b.router.weights == {"v0.0": 1.0, "v1.0": 0.0}
    assert b.config.config_hash == a.config.config_hash == change.config_hash
    assert b.origin.source == "PUT /admin/routing" and b.origin.version == a.origin.version == 2
    assert b.sync() is False  # nothing newer


def test_a_restart_resumes_the_stored_routing_not_the_files(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    table(path).change(weights={"v0.0": 0.9, "v1.0": 0.1}, source="rollout")
    again = table(path)  # the same file config as before
    assert again.router.weights == {"v0.0": 0.9, "v1.0": 0.1}
    described = again.describe_origin()
    assert described["source"] == "rollout" and described["restored_at_start"] is True
    assert described["shared_state"] == str(path)


def test_an_edited_config_file_wins_at_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    table(path).change(weights={"v0.0": 0.9, "v1.0": 0.1}, source="PUT /admin/routing")
    edited = table(path, [0.2, 0.8])
    assert edited.router.weights == {"v0.0": 0.2, "v1.0": 0.8}
    assert edited.origin.source.startswith("config file (changed")
    assert table(path, [0.2, 0.8]).origin.restored  # and the next start resumes it again


def test_changed_variants_make_the_file_win(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    table(path).change(weights={"v0.0": 0.9, "v1.0": 0.1})
    three = table(path, [0.2, 0.3, 0.5])
    assert three.names == ["v0.0", "v1.0", "v2.0"] and three.origin.source == "config file (variants changed)"


def test_a_refused_change_changes_nothing_anywhere(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    a, b = table(path), table(path)
    with pytest.raises(InvalidRoutingChange, match="unknown variant"):
        a.change(weights={"nope": 1.0})
    with pytest.raises(InvalidRoutingChange, match="sum to more than 0"):
        a.change(weights={"v0.0": 0.0, "v1.0": 0.0})
    assert b.sync() is False and a.origin.version == 1


def test_concurrent_changes_of_different_keys_from_two_processes_both_land(tmp_path: Path) -> None:
    """Each change is applied on top of the stored routing inside one transaction: a worker whose own
    view is stale does not undo another worker's change."""
    path = tmp_path / FILE_NAME
    a, b = table(path), table(path)
    barrier = threading.Barrier(2)

    def weights() -> None:
        barrier.wait()
        for i in range(20):
            a.change(weights={"v0.0": 1.0 + i, "v1.0": 1.0})

    def salt() -> None:
        barrier.wait()
        for i in range(20):
            b.change(salt=f"salt-{i}")

    threads = [threading.Thread(target=weights), threading.Thread(target=salt)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a.sync()
    b.sync()
    assert a.config == b.config
    assert a.config.salt == "salt-19" and a.router.weights["v0.0"] == pytest.approx(20 / 21)
    assert a.origin.version == 41


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(st.tuples(st.integers(0, 2), st.sampled_from([0.0, 0.1, 0.5, 1.0, 3.0])), max_size=12))
def test_every_worker_converges_on_the_last_change(tmp_path_factory: pytest.TempPathFactory,
                                                   changes: list[tuple[int, float]]) -> None:
    path = tmp_path_factory.mktemp("state") / FILE_NAME
    workers = [table(path) for _ in range(3)]
    made = 0
    for who, weight in changes:
        workers[who].sync()
        try:
            workers[who].change(weights={"v0.0": weight})
            made += 1
        except InvalidRoutingChange:
            pass  # weights summing to 0 are refused
    for w in workers:
        w.sync()
    assert len({w.config.config_hash for w in workers}) == 1
    assert {w.origin.version for w in workers} == {1 + made}
