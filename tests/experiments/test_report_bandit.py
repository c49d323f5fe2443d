from __future__ import annotations

import numpy as np
import pandas as pd

from experiments.report.bandit import bandit_section, render


def _records(weights: list[tuple[float, str]], n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Two arms; in each period the arm a share follows ``weights`` and a's reward is 1, b's 0."""
    rng = np.random.default_rng(seed)
    rows = []
    for period, (share_a, tag) in enumerate(weights):
        for i in range(n):
            arm = "a" if rng.random() < share_a else "b"
            rows.append({"role": "primary", "routing": "weighted", "model_version": arm, "kind": "classifier",
                         "assignment_probability": share_a if arm == "a" else 1 - share_a, "weights": tag,
                         "ts_ms": period * 100_000 + i, "correct": float(arm == "a"), "abs_error": np.nan})
    return pd.DataFrame(rows)


def test_a_moving_split_gets_a_bandit_section_with_ipw_regret_and_the_weights_over_time() -> None:
    section = bandit_section(_records([(0.5, "a=0.5,b=0.5"), (0.9, "a=0.9,b=0.1")]))
    assert section is not None and section["reward"] == "correct"
    a, b = section["versions"]["a"], section["versions"]["b"]
    assert a["ipw_mean"] == 1.0 and b["ipw_mean"] == 0.0 and a["n"] + b["n"] == 800
    assert section["regret"]["best"] == "a" and section["regret"]["total"] == b["labelled"]
    assert [p["weights"] for p in section["weights_over_time"]] == [{"a": 0.5, "b": 0.5}, {"a": 0.9, "b": 0.1}]
    text = "\n".join(render(section))
    assert "regret against always serving a" in text and "weights changed 1 time(s)" in text


def test_a_fixed_split_gets_none() -> None:
    assert bandit_section(_records([(0.5, "a=0.5,b=0.5")])) is None
    assert bandit_section(pd.DataFrame()) is None
