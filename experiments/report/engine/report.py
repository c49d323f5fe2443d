"""The report from the engine's aggregates, in the pandas path's form (docs/report.md)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from experiments.report import statistics as st
from experiments.report.analyse import MULTIPLE_EXPOSURE_WARN, NoRuns, _quality
from experiments.report.engine import compare as c
from experiments.report.engine import queries as q
from experiments.report.engine import sections, segments, sequential
from experiments.report.engine.engines import Engine
from experiments.report.engine.queries import SAMPLE_ROWS, Filters
from experiments.report.recommend import DEFAULT_MAX_SLOWDOWN, recommend
from gateway.routing.router import parse_weights_tag

ENGINE_NOTE = ("the always-valid column looks at the ends of slices of time rather than at exact row counts; "
               "intervals come from a sample of about 20,000 rows per version (docs/report.md)")


class EngineUnsupported(Exception):
    """What the engine path does not compute yet (a regressor's report)."""


def engine_report(engine: Engine, filters: Filters, *, seed: int = 0, control: str | None = None,
                  correction: str = "holm", segment_by: str | None = None,
                  max_slowdown: float = DEFAULT_MAX_SLOWDOWN) -> tuple[dict[str, Any], pd.DataFrame]:
    """The report's dict (the pandas path's form, docs/report.md) and a sample of rows for its charts."""
    versions = q.versions(engine, filters)
    if versions.empty:
        raise NoRuns("no prediction rows in the table match the filters")
    if (versions["kind_max"] == "regressor").any():
        raise EngineUnsupported("the engine path covers classifiers so far, and this table holds a regressor's "
                                "predictions: run the report with --engine mlflow")
    q.prepare_labels(engine)
    filters = q.prepare_judged(engine, filters)
    q.prepare_sticky_users(engine, filters)
    classes = q.classes(engine, filters)
    labels = sorted(classes["prediction"].astype(str).unique().tolist())
    counts = {(str(r), str(v)): int(n) for r, v, n in zip(versions["role"], versions["model_version"], versions["n"],
                                                       strict=True)}
    sample = q.sample(engine, filters, counts, seed)
    accuracy = q.accuracy(engine, filters)
    report: dict[str, Any] = {"n_records": int(versions["n"].sum()), "kind": "classifier", "labels": labels,
                              "versions": {}, "shadow_versions": {},
                              "tests": {"class_chi2": None, "latency_mwu": None, "srm": None}, "shadow": None,
                              "verdicts": []}
    for role, key in (("primary", "versions"), ("shadow", "shadow_versions")):
        rows = versions[versions["role"] == role].sort_values("model_version")
        total = int(rows["n"].sum())
        for _, row in rows.iterrows():
            v = str(row["model_version"])
            rs = sample[(sample["role"] == role) & (sample["model_version"] == v)]
            report[key][v] = _summary(row, total, rs, classes[(classes["role"] == role)
                                                              & (classes["model_version"] == v)], labels,
                                      accuracy[accuracy["model_version"] == v] if role == "primary" else None, seed)
    names = list(report["versions"])
    verdicts: list[str] = report["verdicts"]
    report["unit"] = unit = q.unit(engine, filters)
    if unit["unit"] == "user":
        verdicts.append(f"unit of analysis: the user ({unit['why']})")
    # per version and user, when the user is the unit: the clustered tests and the exposure both read it
    per_users = q.per_user(engine, filters, labels) if unit["unit"] == "user" else None
    if len(names) >= 2:
        c.between(report, engine, filters, sample, control, correction, seed, per_users)
        if segment_by is not None:
            chosen = report["comparisons"]["control"]
            report["segments"] = segments.segments(engine, filters, segment_by, chosen, labels, correction, seed,
                                                   unit["unit"])
            verdicts.extend(report["segments"].get("verdicts") or [report["segments"].get("error", "")])
    elif names:
        verdicts.append(f"only {names[0]} answered traffic: no between-version tests")
    _quality(report, verdicts)
    latest = _sample_ratio(report, engine, filters, names, unit["unit"] == "user")
    exposure = q.exposure(engine, filters, per_users)
    if exposure is not None:
        report["health"] = {"multiple_exposure": exposure}
        if exposure["share"] > MULTIPLE_EXPOSURE_WARN:
            verdicts.append(f"WARNING: {exposure['share']:.1%} of {exposure['users']} sticky users were answered by "
                            "more than one version (routing changed under them, or forced headers): their requests "
                            "mix the arms, so the comparison between versions is diluted")
    srm = None
    if latest is not None:
        config_hash, weights = latest
        srm = sequential.srm_test(engine, q.srm_units(filters, config_hash, unit["unit"] == "user"),
                                  parse_weights_tag(weights), report["tests"].get("srm"))
    slices = sequential.Slices(engine, filters, labels)
    report["sequential"] = sequential.sequential_section(report, slices, names, srm)
    if report["shadow_versions"]:
        report["shadow"] = sections.shadow(engine, filters, labels, seed)
        verdicts.extend(report["shadow"]["verdicts"])
    report["recommendation"] = recommend(report, max_slowdown)
    report["bandit"] = sections.bandit(engine, filters)
    charts = sample.assign(kind="classifier", value=np.nan)
    return report, charts


def _summary(row: pd.Series, total: int, sample: pd.DataFrame, classes: pd.DataFrame, labels: list[str],
             accuracy: pd.DataFrame | None, seed: int) -> dict[str, Any]:
    n = int(row["n"])
    latency = {"mean": float(row["mean"]), "p50": float(row["p50"]), "p95": float(row["p95"]), "p99": float(row["p99"])}
    _intervals(latency, sample["latency_ms"].to_numpy(dtype=float), n, seed)
    out: dict[str, Any] = {"count": n, "share": n / total if total else 0.0, "latency_ms": latency}
    if int(row["rt_n"] or 0):
        own = {"mean": float(row["rt_mean"]), "p50": float(row["rt_p50"]), "p95": float(row["rt_p95"]),
               "p99": float(row["rt_p99"])}
        _intervals(own, sample["request_time_ms"].dropna().to_numpy(dtype=float), int(row["rt_n"]), seed)
        out["request_time_ms"] = own
    if pd.notna(row["batch_rows_mean"]):
        out["batch_rows_mean"] = float(row["batch_rows_mean"])
    found = dict(zip(classes["prediction"].astype(str), classes["n"].astype(int), strict=True))
    out["classes"] = {lbl: int(found.get(lbl, 0)) for lbl in labels}
    out["class_shares"] = {lbl: k / n for lbl, k in out["classes"].items()}
    out["accuracy"] = None
    if accuracy is not None and not accuracy.empty:
        out["accuracy"] = st.accuracy_counts(int(accuracy["right_"].iloc[0]), int(accuracy["labelled"].iloc[0]))
    return out


def _intervals(summary: dict[str, Any], sample: np.ndarray, n: int, seed: int) -> None:
    """The p50 and p95 intervals from the engine's sample (None below 10 rows, as on the pandas path)."""
    sample = sample[:SAMPLE_ROWS] if n >= 10 else sample[:0]
    ci50 = st.bootstrap_quantile_ci(sample, 0.5, seed=seed) if n >= 10 else None
    ci95 = st.bootstrap_quantile_ci(sample, 0.95, seed=seed) if n >= 10 else None
    summary["p50_ci"] = ci50.as_list() if ci50 else None
    summary["p95_ci"] = ci95.as_list() if ci95 else None


def _sample_ratio(report: dict[str, Any], engine: Engine, f: Filters, names: list[str],
                  by_user: bool) -> tuple[str, str] | None:
    """The fixed-horizon sample-ratio tests per configuration; returns the latest configuration's hash
    and weights (for the always-valid test), None without randomised traffic."""
    counts = q.srm(engine, f, by_user)
    by_config: dict[str, dict[str, Any]] = {}
    last: dict[str, int] = {}
    for (config_hash, weights), group in counts.groupby(["config_hash", "weights"]):
        res = st.srm(dict(zip(group["model_version"].astype(str), group["n"].astype(int), strict=True)),
                     parse_weights_tag(str(weights)))
        if res is not None:
            by_config[str(config_hash)] = {**res, "n": int(group["n"].sum()), "unit": "user" if by_user else "request"}
            last[str(config_hash)] = max(last.get(str(config_hash), 0), int(group["last_ts"].max()))
    if by_config:
        latest = max(by_config, key=lambda h: last[h])
        report["tests"]["srm"] = {"config_hash": latest, **by_config[latest]}
        if len(by_config) > 1:
            report["tests"]["srm_by_config"] = by_config
        for h, res in by_config.items():
            report["verdicts"].append(st.srm_verdict(res, f" (config {h}, counting {res['unit']}s)"))
        weights = counts.loc[counts["config_hash"] == latest, "weights"].iloc[0]
        return latest, str(weights)
    if len(names) >= 2:
        report["verdicts"].append(st.srm_verdict(None))
    return None
