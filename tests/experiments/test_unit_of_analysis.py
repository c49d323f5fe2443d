"""Under sticky routing the user is the unit: the sample ratio counts users, and per-request metrics
are clustered by user (a cluster bootstrap), so heavy users do not pass for many independent samples."""

from __future__ import annotations

import numpy as np
import pandas as pd

from experiments.report.analyse import analyse
from experiments.report.statistics import cluster_ratio_difference
from experiments.report.text import render_terminal


def _sticky(rng: np.random.Generator, users: int, *, latency_ms: dict[str, float] | None = None,
            mixed: int = 0) -> pd.DataFrame:
    """Sticky traffic: each user assigned 50/50 by a fair coin, with Pareto-distributed request counts
    (a few heavy users); ``mixed`` users also get a request from the other version."""
    rows = []
    for u in range(users):
        version = "v1.0" if rng.random() < 0.5 else "v2.0"
        n = int(min(400, 1 + rng.pareto(1.2) * 5)) + (1 if u < mixed else 0)
        user_latency = rng.lognormal(np.log((latency_ms or {}).get(version, 20.0)), 0.3)  # users differ
        for i in range(n):
            v = ("v2.0" if version == "v1.0" else "v1.0") if (u < mixed and i == 0) else version
            rows.append({"request_id": f"u{u}-{i}", "role": "primary", "model_version": v, "routing": "sticky",
                         "user": f"user-{u}", "prediction": "a" if rng.random() < 0.6 else "b",
                         "latency_ms": user_latency * rng.lognormal(0, 0.1), "weights": "v1.0=0.5,v2.0=0.5",
                         "config_hash": "h", "ts_ms": u * 1000 + i, "row_index": 0, "correct": np.nan})
    return pd.DataFrame(rows)


def test_fifty_sticky_users_with_heavy_tails_give_no_srm_when_users_are_counted() -> None:
    rng = np.random.default_rng(50)
    runs, srm_users, srm_requests = 500, 0, 0
    from experiments.report.analyse import _sample_ratio

    for _ in range(runs):
        records = _sticky(rng, 50)
        report: dict = {"tests": {}}  # type: ignore[type-arg]
        _sample_ratio(records, report, ["v1.0", "v2.0"], [], by_user=True)
        srm_users += bool(report["tests"]["srm"]["mismatch"])
        report = {"tests": {}}
        _sample_ratio(records, report, ["v1.0", "v2.0"], [], by_user=False)
        srm_requests += bool(report["tests"]["srm"]["mismatch"])
    print(f"{runs} simulations, 50 sticky users, fair 50/50: SRM at alpha 0.001 counting users "
          f"{srm_users / runs:.1%}, counting requests {srm_requests / runs:.1%}")
    assert srm_users / runs <= 0.01
    assert srm_requests > srm_users  # what counting requests got wrong


def test_the_report_names_the_user_as_its_unit_and_clusters_by_it() -> None:
    records = _sticky(np.random.default_rng(4), 300, mixed=9)
    report = analyse(records)
    assert report["unit"]["unit"] == "user" and report["unit"]["users"] == 300
    assert any(v.startswith("unit of analysis: the user") for v in report["verdicts"])
    assert report["tests"]["srm"]["unit"] == "user" and report["tests"]["srm"]["n"] <= 300
    section = report["comparisons"]
    assert section["unit"] == "user" and section["pairs"]["v2.0"]["latency"]["test"] == "cluster_bootstrap"
    assert "unit of analysis: users (cluster bootstrap)" in render_terminal(report)
    exposure = report["health"]["multiple_exposure"]
    assert exposure["in_more_than_one_version"] == 9 and exposure["share"] == 0.03
    assert any("answered by more than one version" in v for v in report["verdicts"])


def test_clustering_widens_the_interval_when_users_differ() -> None:
    """Identical versions, users that differ a lot: per request the difference looks significant far
    more often than the cluster bootstrap, which resamples users, says it is."""
    rng = np.random.default_rng(9)
    false_request, false_user, runs = 0, 0, 200
    from scipy import stats

    for _ in range(runs):
        records = _sticky(rng, 60)
        a, b = (records[records["model_version"] == v] for v in ("v1.0", "v2.0"))
        false_request += stats.ttest_ind(a["latency_ms"], b["latency_ms"]).pvalue < 0.05
        per = {v: g.groupby("user")["latency_ms"].agg(["sum", "size"]) for v, g in (("a", a), ("b", b))}
        res = cluster_ratio_difference(per["a"]["sum"], per["a"]["size"], per["b"]["sum"], per["b"]["size"], seed=None)
        false_user += res is not None and res["p_value"] < 0.05
    print(f"A/A, 60 sticky users: latency 'significant' per request {false_request / runs:.0%}, "
          f"per user (cluster bootstrap) {false_user / runs:.0%}")
    assert false_user / runs <= 0.10 and false_request > 2 * false_user
