"""The bandit's rewards, read from the spool: every counted label /feedback stored for a primary
prediction that was routed at random (weighted or sticky), read incrementally by label id. A label
counts when it is the first its unit (the sticky user, else the request) gave that version, and it
came with a credential (gateway/spool/label_table.py): one client labelling a thousand rows of its own
request moves the posterior as one unit does. A reward outside ``[bandit] reward_range`` (stored by
an earlier release) is skipped, so that it cannot break every reweighting after a restart. Every worker of a
gateway shares the spool, so the worker that reweighs sees every worker's labels; after a restart the
sums are rebuilt from the labels the spool still keeps (its retention)."""

from __future__ import annotations

import math

from gateway.bandit.spec import BanditSection, Reward
from gateway.bandit.thompson import ArmRewards
from gateway.domain.records import RANDOMISED, Role
from gateway.spool.sqlite import SqliteFile

_NEW_LABELS = f"""SELECT l.id, l.model_version, l.correct, l.abs_error, l.reward, json_extract(r.shared, '$.routing')
                 FROM labels l
                 JOIN entries e ON e.request_id = l.request_id AND e.role = '{Role.PRIMARY}'
                      AND e.first_row <= l.row_index AND l.row_index < e.first_row + e.n_rows
                 JOIN entry_rows r ON r.entry_id = e.id
                 WHERE l.id > ? AND l.model_version != '' AND l.counted = 1 AND e.ts_ms >= ?
                 ORDER BY l.id LIMIT 50000"""


class SpoolRewards:
    def __init__(self, db: SqliteFile, section: BanditSection, since_ms: int = 0) -> None:
        self.db = db
        self.section = section
        self.reward = section.reward
        self.skipped = 0  # rewards outside the range, not counted
        self.since_ms = since_ms  # predictions made before the bandit started do not count
        self._last_id = 0
        self.sums: dict[str, ArmRewards] = {}

    def read(self) -> dict[str, ArmRewards]:
        """The sums per arm, with every label stored since the last read added."""
        while True:
            rows = self.db.read(_NEW_LABELS, (self._last_id, self.since_ms))
            for label_id, version, correct, abs_error, reward, routing in rows:
                self._last_id = max(self._last_id, int(label_id))  # type: ignore[arg-type]
                value = self._value(correct, abs_error, reward)
                if routing in RANDOMISED and value is not None:
                    self.sums[str(version)] = self.sums.get(str(version), ArmRewards()).add(value)
            if len(rows) < 50000:
                return dict(self.sums)

    def _value(self, correct: object, abs_error: object, reward: object) -> float | None:
        if self.reward is Reward.CORRECT:
            return None if correct is None else float(bool(correct))
        if self.reward is Reward.FEEDBACK:
            if not isinstance(reward, int | float) or not math.isfinite(reward):
                return None
            if not self.section.reward_in_range(float(reward)):
                self.skipped += 1
                return None
            return float(reward)
        if self.reward is Reward.NEGATIVE_ABS_ERROR and isinstance(abs_error, int | float) and math.isfinite(abs_error):
            return -float(abs_error)
        return None
