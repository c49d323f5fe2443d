"""The replicas' controller counts labels read from MLflow as one gateway counts them in its spool:
the first label each unit gives each version, of randomised predictions only."""

from __future__ import annotations

import pandas as pd

from gateway.rollout.counts import ArmCounts
from gateway.rollout.mlflow_feedback import count_labels


def test_one_label_per_unit_and_version_the_earliest() -> None:
    frame = pd.DataFrame([
        # one client's 1,000-row request, every row labelled: one unit
        *({"v": "const", "how": "weighted", "user": None, "rid": "big", "ok": 1.0, "ts": 5 + k} for k in range(1000)),
        {"v": "v2.0", "how": "sticky", "user": "u1", "rid": "a", "ok": 0.0, "ts": 1},  # u1's first, on v2.0
        {"v": "v2.0", "how": "sticky", "user": "u1", "rid": "b", "ok": 1.0, "ts": 2},  # u1 again: not counted
        {"v": "const", "how": "sticky", "user": "u1", "rid": "c", "ok": 1.0, "ts": 3},  # u1 on another version
        {"v": "v2.0", "how": "forced", "user": None, "rid": "f", "ok": 1.0, "ts": 4},  # forced: not randomised
        {"v": "v2.0", "how": "weighted", "user": None, "rid": "d", "ok": None, "ts": 6},  # not judged
    ]).sample(frac=1.0, random_state=0)  # the order MLflow returns them in does not matter
    totals: dict[str, ArmCounts] = {}
    counted: set[tuple[str, str]] = set()
    count_labels(frame, totals, counted, variant="v", routing="how", correct="ok", user="user", request="rid",
                 time="ts")
    assert (totals["const"].labelled, totals["const"].correct) == (2, 2)
    assert (totals["v2.0"].labelled, totals["v2.0"].correct) == (1, 0)  # u1's earliest, not the later right one
    count_labels(frame, totals, counted, variant="v", routing="how", correct="ok", user="user", request="rid",
                 time="ts")  # read again (window mode, the other source): nothing counts twice
    assert totals["const"].labelled == 2 and totals["v2.0"].labelled == 1
