"""The MLflow outbox: items are sent one at a time, oldest first, retried after a failure, taken back
from a sender that died, and listed until they are done."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gateway.spool.outbox import ItemKind, Outbox


def test_items_go_oldest_first_one_at_a_time(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    first = box.add(ItemKind.CHAMPION_ALIAS, {"model": "m", "version": "2"}, "alias to 2")
    second = box.add(ItemKind.CHANGE_RUN, {"config_hash": "abc"}, "change abc")
    other = Outbox(tmp_path)  # another worker's sender over the same file
    item = box.claim()
    assert item is not None and item.id == first and item.attempts == 0 and item.payload["version"] == "2"
    assert other.claim() is None  # the oldest is held by a live sender: nobody jumps the queue
    box.failed(first, "MLflow down", retry_in_s=0)
    retried = other.claim()
    assert retried is not None and retried.id == first and retried.attempts == 1  # it may have landed: look first
    other.done(first)
    assert [p["id"] for p in box.pending()] == [second]
    assert box.is_done(first) and not box.is_done(second)


def test_a_failed_item_waits_for_its_retry_time(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    item_id = box.add(ItemKind.CHANGE_RUN, {}, "change")
    assert box.claim() is not None
    box.failed(item_id, "connection refused", retry_in_s=30)
    assert box.claim() is None
    pending = box.pending()
    assert pending[0]["attempts"] == 1 and pending[0]["last_error"] == "connection refused"


def test_the_item_of_a_sender_that_died_is_taken_back_at_once(tmp_path: Path) -> None:
    script = (f"import sys; sys.path.insert(0, {str(Path.cwd())!r}); from gateway.spool.outbox import Outbox; "
              f"b = Outbox({str(tmp_path)!r}); assert b.claim() is not None")
    box = Outbox(tmp_path)
    item_id = box.add(ItemKind.CHAMPION_ALIAS, {"model": "m", "version": "1"}, "alias")
    subprocess.run([sys.executable, "-c", script], check=True)  # claims it with a 300 s lease, then exits
    item = box.claim()
    assert item is not None and item.id == item_id and item.attempts == 1


class OutboxMachine(RuleBasedStateMachine):
    """Two senders over one file, adding, claiming, failing and finishing in any order."""

    @initialize()
    def open(self) -> None:
        import tempfile

        self.dir = tempfile.mkdtemp()
        self.boxes = [Outbox(self.dir), Outbox(self.dir)]
        self.open_ids: list[int] = []
        self.held: dict[int, int] = {}  # item id -> which sender holds it
        self.done_order: list[int] = []

    @rule()
    def add(self) -> None:
        self.open_ids.append(self.boxes[0].add(ItemKind.CHANGE_RUN, {}, "x"))

    @rule(who=st.integers(0, 1))
    def claim(self, who: int) -> None:
        item = self.boxes[who].claim()
        if item is None:
            # only when nothing is open, or the oldest is another sender's
            assert not self.open_ids or self.held.get(self.open_ids[0], who) != who
            return
        assert item.id == self.open_ids[0]  # always the oldest open item
        assert self.held.get(item.id, who) == who
        self.held[item.id] = who

    @precondition(lambda self: bool(self.held))
    @rule(ok=st.booleans())
    def finish(self, ok: bool) -> None:
        item_id, who = next(iter(self.held.items()))
        del self.held[item_id]
        if ok:
            self.boxes[who].done(item_id)
            self.open_ids.remove(item_id)
            self.done_order.append(item_id)
        else:
            self.boxes[who].failed(item_id, "down", retry_in_s=0)

    @invariant()
    def pending_lists_the_open_items_in_order(self) -> None:
        if hasattr(self, "boxes"):
            assert [p["id"] for p in self.boxes[1].pending()] == self.open_ids
            assert self.done_order == sorted(self.done_order)

    def teardown(self) -> None:
        for box in getattr(self, "boxes", []):
            box.close()


TestOutboxMachine = OutboxMachine.TestCase
TestOutboxMachine.settings = settings(max_examples=30, stateful_step_count=25, deadline=None)
