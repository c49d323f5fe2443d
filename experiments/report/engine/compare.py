"""Versions against the control from aggregates: the tests of one pair, the clustered (per-user)
ones, and the correction family (comparisons.compare_to_control's form)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from experiments.report import statistics as st
from experiments.report.comparisons import control_family
from experiments.report.engine import queries as q
from experiments.report.engine.engines import Engine
from experiments.report.engine.queries import SAMPLE_ROWS, Filters

DELTA_METHOD_UNITS = 5_000  # users per arm past which the clustered tests use the delta method

def latency_test(counts: pd.DataFrame, sample: pd.DataFrame, base: str, other: str, medians: dict[str, float],
                  seed: int) -> dict[str, Any] | None:
    a, b = counts[counts["model_version"] == base], counts[counts["model_version"] == other]
    n_a, n_b = int(a["n"].sum()), int(b["n"].sum())
    if n_a < 2 or n_b < 2:
        return None
    u_b, p = st.mwu_counts(a["x"].to_numpy(), a["n"].to_numpy(), b["x"].to_numpy(), b["n"].to_numpy())
    ci = None
    sa = sample.loc[(sample["model_version"] == base) & (sample["role"] == "primary"), "latency_ms"].to_numpy(float)
    sb = sample.loc[(sample["model_version"] == other) & (sample["role"] == "primary"), "latency_ms"].to_numpy(float)
    if n_a >= 10 and n_b >= 10 and len(sa) >= 2 and len(sb) >= 2:
        res = st.latency_mwu(sa[:SAMPLE_ROWS], sb[:SAMPLE_ROWS], seed=seed)
        ci = res["median_diff_ci"] if res else None
    return {"a": base, "b": other, "u": u_b, "p_value": p, "median_diff_ms": medians[other] - medians[base],
            "median_diff_ci": ci, "prob_b_slower": u_b / (n_a * n_b), "significant": bool(p < st.ALPHA),
            "n_a": n_a, "n_b": n_b}


def between(report: dict[str, Any], engine: Engine, f: Filters, sample: pd.DataFrame, control: str | None,
             correction: str, seed: int, per_users: pd.DataFrame | None = None) -> None:
    """The tests between versions; ``per_users`` (queries.per_user's frame) when the user is the unit."""
    names, verdicts, tests, labels = list(report["versions"]), report["verdicts"], report["tests"], report["labels"]
    versions = report["versions"]
    table = np.array([[versions[v]["classes"][lbl] for lbl in labels] for v in names])
    tests["class_chi2"] = st.class_chi2(table)
    verdicts.append(st.class_verdict(tests["class_chi2"], names))
    counts = q.latency_counts(engine, f)
    medians = {v: versions[v]["latency_ms"]["p50"] for v in names}
    latency = {v: latency_test(counts, sample, a, v, medians, seed) for a in names[:1] for v in names[1:]}
    tests["latency_mwu"] = latency[names[1]]
    if len(names) > 2:
        tests["latency_mwu_all"] = list(latency.values())
    for v, res in latency.items():
        verdicts.append(st.latency_verdict(names[0], v, res))
    chosen = control if control in names else names[0]
    if control is not None and control not in names:
        verdicts.append(f"the control {control} answered no traffic in this range: {chosen} is the control")
    if report["unit"]["unit"] == "user":
        per_user = per_users if per_users is not None else q.per_user(engine, f, labels)
        pairs = {v: clustered(per_user, chosen, v, labels, seed) for v in names if v != chosen}
    else:
        control_latency = {v: latency.get(v) if chosen == names[0] else
                           latency_test(counts, sample, chosen, v, medians, seed) for v in names if v != chosen}
        pairs = {v: pair(versions[chosen], versions[v], labels, control_latency[v]) for v in names if v != chosen}
    report["comparisons"] = family(pairs, chosen, correction, report["unit"]["unit"])
    verdicts.extend(report["comparisons"]["verdicts"])


def pair(a: dict[str, Any], b: dict[str, Any], labels: list[str], latency: dict[str, Any] | None
          ) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    chi = st.class_chi2(np.array([[a["classes"][lbl] for lbl in labels], [b["classes"][lbl] for lbl in labels]]))
    if chi is not None:
        out["classes"] = {"test": "chi2", "p_value": chi["p_value"], "cramers_v": chi["cramers_v"]}
    acc_a, acc_b = a.get("accuracy"), b.get("accuracy")
    if acc_a and acc_b:
        acc = st.accuracy_difference(np.array([[acc_a["correct"], acc_a["n"] - acc_a["correct"]],
                                               [acc_b["correct"], acc_b["n"] - acc_b["correct"]]]))
        if acc is not None:
            out["accuracy"] = {"test": acc["test"], "p_value": acc["p_value"],
                               "difference": acc_b["rate"] - acc_a["rate"], "n": [acc_a["n"], acc_b["n"]]}
    if latency is not None:
        out["latency"] = {"test": "mann_whitney_u", "p_value": latency["p_value"],
                          "median_diff_ms": latency["median_diff_ms"], "median_diff_ci": latency["median_diff_ci"]}
    return out


def clustered(per_user: pd.DataFrame, control: str, other: str, labels: list[str], seed: int
               ) -> dict[str, dict[str, Any]]:
    ua, ub = per_user[per_user["model_version"] == control], per_user[per_user["model_version"] == other]
    many = min(len(ua), len(ub)) >= DELTA_METHOD_UNITS
    out: dict[str, dict[str, Any]] = {}

    def ratio(a_num: Any, a_den: Any, b_num: Any, b_den: Any) -> dict[str, Any] | None:
        if many:
            return st.cluster_ratio_delta(a_num, a_den, b_num, b_den)
        return st.cluster_ratio_difference(a_num, a_den, b_num, b_den, seed=seed)

    def add(name: str, num: str, den: str, a: pd.DataFrame, b: pd.DataFrame) -> None:
        res = ratio(a[num].to_numpy(float), a[den].to_numpy(float), b[num].to_numpy(float), b[den].to_numpy(float))
        if res is not None:
            out[name] = {k: v for k, v in res.items() if k != "significant"}

    add("latency", "latency", "n", ua, ub)
    for i, lbl in enumerate(labels):
        add(f"class_{lbl}", f"class_{i}", "n", ua, ub)
    la, lb = ua[ua["labelled"] > 0], ub[ub["labelled"] > 0]
    if len(la) >= 2 and len(lb) >= 2:
        add("accuracy", "right_", "labelled", la, lb)
    return out


def family(pairs: dict[str, dict[str, dict[str, Any]]], control: str, correction: str, unit: str) -> dict[str, Any]:
    """One correction family over versions x metrics (comparisons.control_family)."""
    return control_family(pairs, control, correction, st.ALPHA, unit)


def compare_in(engine: Engine, f: Filters, names: list[str], control: str, labels: list[str], unit: str,
                seed: int) -> dict[str, Any]:
    """compare_to_control (no correction) on the rows ``f`` selects, from their aggregates."""
    if unit == "user":
        per_user = q.per_user(engine, f, labels)
        pairs = {v: clustered(per_user, control, v, labels, seed) for v in names if v != control}
        return family(pairs, control, "none", unit)
    versions = q.versions(engine, f)
    versions = versions[versions["role"] == "primary"]
    classes, accuracy = q.classes(engine, f), q.accuracy(engine, f)
    counts = {("primary", str(v)): int(n) for v, n in zip(versions["model_version"], versions["n"], strict=True)}
    sample = q.sample(engine, f.narrowed("{p}role = 'primary'"), counts, seed)
    latency_counts = q.latency_counts(engine, f)
    summaries = {}
    for _, row in versions.iterrows():
        v = str(row["model_version"])
        found = classes[(classes["role"] == "primary") & (classes["model_version"] == v)]
        mine = dict(zip(found["prediction"].astype(str), found["n"].astype(int), strict=True))
        acc = accuracy[accuracy["model_version"] == v]
        summaries[v] = {"classes": {lbl: int(mine.get(lbl, 0)) for lbl in labels},
                        "accuracy": st.accuracy_counts(int(acc["right_"].iloc[0]), int(acc["labelled"].iloc[0]))
                        if not acc.empty else None}
    medians = {str(v): float(p) for v, p in zip(versions["model_version"], versions["p50"], strict=True)}
    pairs = {v: pair(summaries[control], summaries[v], labels,
                      latency_test(latency_counts, sample, control, v, medians, seed)) for v in names if v != control}
    return family(pairs, control, "none", unit)
