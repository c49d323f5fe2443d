"""The report from aggregates: the engine (experiments/report/engines.py) groups the inference
table's rows, and the statistics run on what comes back. Memory grows with versions, classes,
distinct latency values (at the gateway's microsecond resolution) and units, never with rows.

What each figure is computed from:
- counts, shares, classes, accuracy, the chi-square tests, the sample ratio: exact counts;
- latency mean and quantiles: the engine's (exact on DuckDB, within 1/10,000 of rank on Spark);
- the quantiles' and the median difference's bootstrap intervals: a pseudo-random sample of about
  20,000 rows per version drawn in the engine (the pandas path thins to 20,000 too), so within
  their Monte Carlo error of the pandas path's;
- the latency Mann-Whitney test: exact, from each version's distinct values and counts;
- the user as the unit: per-user sums from the engine; the cluster bootstrap below 5,000 users an
  arm, the delta method beyond (its index matrix would not fit);
- shadow pairs: agreement, the confusion matrix and McNemar's 2x2 from a join's counts; the paired
  latency test on up to 200,000 pairs (all of them below that).
- the always-valid column: from slices of time (experiments/report/engine_sequential.py);
- the bandit's IPW: from per-arm weighted sums (gateway/stats/ipw.py, one formula for both paths);
- segments: each segment's comparisons run as the whole report's, on the engine, narrowed to it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from experiments.report import engine_sequential as sequential
from experiments.report import statistics as st
from experiments.report.analyse import MULTIPLE_EXPOSURE_WARN, NoRuns, _quality
from experiments.report.bandit import NOTE as BANDIT_NOTE
from experiments.report.bandit import _clean
from experiments.report.comparisons import NAMES, SEGMENT_BINS, adjust, segment_family
from experiments.report.engines import Engine
from experiments.report.recommend import DEFAULT_MAX_SLOWDOWN, recommend
from gateway.domain.records import RANDOMISED
from gateway.routing.router import parse_weights_tag
from gateway.stats.ipw import ArmSums, estimates_from_sums, regret_from_counts

SAMPLE_ROWS = 20_000  # per version, for the bootstrap intervals (statistics.py thins to as many)
SAMPLE_MODULUS = 1_000_003  # a prime: rows whose hash falls below rate x this are sampled
DELTA_METHOD_UNITS = 5_000  # users per arm past which the clustered tests use the delta method
PAIRED_SAMPLE = 200_000
QUARTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
LATENCY = "ROUND(inference_time_ms, 3)"  # the gateway logs microseconds
ENGINE_NOTE = ("the always-valid column looks at the ends of slices of time rather than at exact row counts; "
               "intervals come from a sample of about 20,000 rows per version (docs/report.md)")


def _quote(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


class Filters:
    """since/until (epoch ms), config hash and role, as SQL over the table; ``day`` bounds let the
    engine skip the day partitions outside the range."""

    def __init__(self, since: int | None = None, until: int | None = None, config_hash: str | None = None,
                 role: str = "all", extra: tuple[str, ...] = ()) -> None:
        self.since, self.until, self.config_hash, self.role = since, until, config_hash, role
        self.extra = extra  # further conditions, "{p}" standing for the table's alias and a dot

    def narrowed(self, condition: str) -> Filters:
        return Filters(self.since, self.until, self.config_hash, self.role, (*self.extra, condition))

    def sql(self, alias: str = "", role: str | None = None) -> str:
        p = f"{alias}." if alias else ""
        clauses = [f"{p}inference_time_ms IS NOT NULL", f"{p}prediction IS NOT NULL"]
        if self.since is not None:
            clauses += [f"{p}ts_ms >= {int(self.since)}", f"{p}day >= {_quote(_day(self.since))}"]
        if self.until is not None:
            clauses += [f"{p}ts_ms < {int(self.until)}", f"{p}day <= {_quote(_day(self.until))}"]
        if self.config_hash:
            clauses.append(f"{p}config_hash = {_quote(self.config_hash)}")
        wanted = role or (None if self.role == "all" else self.role)
        if wanted:
            clauses.append(f"{p}role = {_quote(wanted)}")
        clauses += [condition.format(p=p) for condition in self.extra]
        return " AND ".join(clauses)


def _day(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))


def _labels_cte(engine: Engine) -> str:
    """The first label of each prediction (by its time), as ``labels``; none without a feedback table."""
    if not engine.tables.get("feedback"):
        return ("labels AS (SELECT CAST(NULL AS VARCHAR) AS request_id, CAST(NULL AS BIGINT) AS row_index, "
                "CAST(NULL AS DOUBLE) AS correct, CAST(NULL AS VARCHAR) AS true_label, CAST(NULL AS DOUBLE) AS reward "
                "WHERE 1 = 0)")
    return ("labels AS (SELECT request_id, row_index, correct, true_label, reward FROM (SELECT request_id, "
            "row_index, CAST(correct AS DOUBLE) AS correct, true_label, CAST(reward AS DOUBLE) AS reward, "
            "ROW_NUMBER() OVER (PARTITION BY request_id, row_index ORDER BY ts_ms) AS k FROM feedback) AS ranked "
            "WHERE k = 1)")


# A label judged where it arrived has ``correct``; one another replica received is judged here, by
# the one rule (gateway/domain/label_rule.py): the label's text equals the prediction's.
_RIGHT = ("COALESCE(l.correct, CASE WHEN JSON_EXTRACT_STRING(l.true_label, '$') = p.prediction THEN 1.0 "
          "ELSE 0.0 END)")


def _versions(engine: Engine, f: Filters) -> pd.DataFrame:
    return engine.frame(f"""
        SELECT role, model_version, COUNT(*) AS n, MIN(kind) AS kind_min, MAX(kind) AS kind_max,
               AVG(inference_time_ms) AS mean, QUANTILE_CONT(inference_time_ms, 0.5) AS p50,
               QUANTILE_CONT(inference_time_ms, 0.95) AS p95, QUANTILE_CONT(inference_time_ms, 0.99) AS p99,
               COUNT(request_time_ms) AS rt_n, AVG(request_time_ms) AS rt_mean,
               QUANTILE_CONT(request_time_ms, 0.5) AS rt_p50, QUANTILE_CONT(request_time_ms, 0.95) AS rt_p95,
               QUANTILE_CONT(request_time_ms, 0.99) AS rt_p99, AVG(batch_rows) AS batch_rows_mean,
               MAX(ts_ms) AS last_ts
        FROM predictions WHERE {f.sql()} GROUP BY role, model_version""")


def _classes(engine: Engine, f: Filters) -> pd.DataFrame:
    return engine.frame(f"SELECT role, model_version, prediction, COUNT(*) AS n FROM predictions "
                        f"WHERE {f.sql()} GROUP BY role, model_version, prediction")


def _accuracy(engine: Engine, f: Filters) -> pd.DataFrame:
    return engine.frame(f"""
        WITH {_labels_cte(engine)}
        SELECT p.model_version, COUNT(*) AS labelled, SUM({_RIGHT}) AS right_
        FROM predictions AS p JOIN labels AS l ON p.request_id = l.request_id AND p.row_index = l.row_index
        WHERE {f.sql('p', 'primary')} GROUP BY p.model_version""")


def _latency_counts(engine: Engine, f: Filters) -> pd.DataFrame:
    return engine.frame(f"SELECT model_version, {LATENCY} AS x, COUNT(*) AS n FROM predictions "
                        f"WHERE {f.sql(role='primary')} GROUP BY model_version, {LATENCY}")


def _sample(engine: Engine, f: Filters, counts: dict[tuple[str, str], int], seed: int) -> pd.DataFrame:
    """About ``SAMPLE_ROWS`` rows per (role, version), chosen by a hash of the row's key and the seed."""
    cases = " ".join(f"WHEN role = {_quote(r)} AND model_version = {_quote(v)} THEN "
                     f"{int(min(1.0, 1.25 * SAMPLE_ROWS / max(n, 1)) * SAMPLE_MODULUS)}"
                     for (r, v), n in counts.items())
    return engine.frame(f"""
        SELECT role, model_version, inference_time_ms AS latency_ms, request_time_ms, prediction, ts_ms
        FROM predictions
        WHERE {f.sql()}
          AND ABS(HASH(request_id, row_index, {int(seed)})) % {SAMPLE_MODULUS} < CASE {cases} ELSE 0 END""")


def _randomised(f: Filters, extra: str = "") -> str:
    routings = ", ".join(_quote(r) for r in sorted(RANDOMISED))
    return f"{f.sql(role='primary')} AND routing IN ({routings}) AND row_index = 0{extra}"


def _unit(engine: Engine, f: Filters) -> dict[str, Any]:
    row = engine.frame(f"""
        SELECT COUNT(*) AS randomised,
               SUM(CASE WHEN routing = 'sticky' AND "user" IS NOT NULL THEN 1 ELSE 0 END) AS sticky,
               COUNT(DISTINCT CASE WHEN routing = 'sticky' THEN "user" END) AS users
        FROM predictions WHERE {_randomised(f)}""").iloc[0]
    randomised, sticky, users = int(row["randomised"]), int(row["sticky"] or 0), int(row["users"] or 0)
    if randomised and sticky * 2 >= randomised:
        return {"unit": "user", "users": users, "requests": sticky,
                "why": f"{sticky} of {randomised} randomised requests were routed by a sticky user key, "
                       f"{users} users: SRM counts users, per-request metrics are clustered by user"}
    return {"unit": "request", "why": "requests were routed independently (weighted)"}


def _srm(engine: Engine, f: Filters, by_user: bool) -> pd.DataFrame:
    if by_user:  # each sticky user once per configuration, with the version of their first request
        sticky = _randomised(f, " AND weights <> '' AND routing = 'sticky' AND \"user\" IS NOT NULL")
        return engine.frame(f"""
            SELECT config_hash, weights, v AS model_version, COUNT(*) AS n, MAX(last_ts) AS last_ts FROM (
                SELECT config_hash, weights, "user", ARG_MIN(model_version, ts_ms) AS v, MAX(ts_ms) AS last_ts
                FROM predictions
                WHERE {sticky}
                GROUP BY config_hash, weights, "user") AS firsts
            GROUP BY config_hash, weights, v""")
    return engine.frame(f"""
        SELECT config_hash, weights, model_version, COUNT(*) AS n, MAX(ts_ms) AS last_ts FROM predictions
        WHERE {_randomised(f, " AND weights <> ''")} GROUP BY config_hash, weights, model_version""")


def _exposure(engine: Engine, f: Filters) -> dict[str, Any] | None:
    row = engine.frame(f"""
        SELECT COUNT(*) AS users, SUM(CASE WHEN nv > 1 THEN 1 ELSE 0 END) AS mixed FROM (
            SELECT "user", COUNT(DISTINCT model_version) AS nv FROM predictions
            WHERE {f.sql(role='primary')} AND "user" IS NOT NULL GROUP BY "user") AS per_user""").iloc[0]
    users = int(row["users"] or 0)
    if users == 0:
        return None
    mixed = int(row["mixed"] or 0)
    return {"users": users, "in_more_than_one_version": mixed, "share": mixed / users,
            "warn_above": MULTIPLE_EXPOSURE_WARN}


def _per_user(engine: Engine, f: Filters, labels: list[str]) -> pd.DataFrame:
    classes = ", ".join(f"SUM(CASE WHEN p.prediction = {_quote(lbl)} THEN 1.0 ELSE 0.0 END) AS class_{i}"
                        for i, lbl in enumerate(labels))
    return engine.frame(f"""
        WITH {_labels_cte(engine)}
        SELECT p.model_version, p."user", COUNT(*) AS n, SUM(p.inference_time_ms) AS latency,
               SUM(CASE WHEN l.request_id IS NULL THEN 0.0 ELSE 1.0 END) AS labelled,
               SUM(CASE WHEN l.request_id IS NULL THEN 0.0 ELSE {_RIGHT} END) AS right_
               {', ' + classes if classes else ''}
        FROM predictions AS p LEFT JOIN labels AS l ON p.request_id = l.request_id AND p.row_index = l.row_index
        WHERE {f.sql('p', 'primary')} AND p."user" IS NOT NULL GROUP BY p.model_version, p."user\"""")


def _shadow_pairs(engine: Engine, f: Filters) -> pd.DataFrame:
    return engine.frame(f"""
        WITH {_labels_cte(engine)}
        SELECT p.model_version AS version_p, s.model_version AS version_s, p.prediction AS prediction_p,
               s.prediction AS prediction_s,
               {_judged('p')} AS right_p, {_judged('s')} AS right_s,
               COUNT(*) AS n
        FROM predictions AS p JOIN predictions AS s ON p.request_id = s.request_id AND p.row_index = s.row_index
        LEFT JOIN labels AS l ON p.request_id = l.request_id AND p.row_index = l.row_index
        WHERE {f.sql('p', 'primary')} AND {f.sql('s', 'shadow')}
        GROUP BY 1, 2, 3, 4, 5, 6""")


def _judged(alias: str) -> str:
    """1 when the prediction under ``alias`` is right by the label rule, 0 when wrong, NULL unlabelled."""
    return (f"CASE WHEN l.request_id IS NULL THEN NULL WHEN JSON_EXTRACT_STRING(l.true_label, '$') = "
            f"{alias}.prediction THEN 1 ELSE 0 END")


def _paired_latency_sample(engine: Engine, f: Filters, pairs: int, seed: int) -> pd.DataFrame:
    keep = int(min(1.0, PAIRED_SAMPLE / max(pairs, 1)) * SAMPLE_MODULUS)
    return engine.frame(f"""
        SELECT p.inference_time_ms AS latency_p, s.inference_time_ms AS latency_s
        FROM predictions AS p JOIN predictions AS s ON p.request_id = s.request_id AND p.row_index = s.row_index
        WHERE {f.sql('p', 'primary')} AND {f.sql('s', 'shadow')}
          AND ABS(HASH(p.request_id, p.row_index, {int(seed)})) % {SAMPLE_MODULUS} < {keep}""")


# -- the report -----------------------------------------------------------------------------------

def engine_report(engine: Engine, filters: Filters, *, seed: int = 0, control: str | None = None,
                  correction: str = "holm", segment_by: str | None = None,
                  max_slowdown: float = DEFAULT_MAX_SLOWDOWN) -> tuple[dict[str, Any], pd.DataFrame]:
    """The report's dict (the pandas path's form, docs/report.md) and a sample of rows for its charts."""
    versions = _versions(engine, filters)
    if versions.empty:
        raise NoRuns("no prediction rows in the table match the filters")
    if (versions["kind_max"] == "regressor").any():
        raise NoRuns("the engine path covers classifiers so far; for a regressor, --engine mlflow")
    classes = _classes(engine, filters)
    labels = sorted(classes["prediction"].astype(str).unique().tolist())
    counts = {(str(r), str(v)): int(n) for r, v, n in zip(versions["role"], versions["model_version"], versions["n"],
                                                       strict=True)}
    sample = _sample(engine, filters, counts, seed)
    accuracy = _accuracy(engine, filters)
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
    report["unit"] = unit = _unit(engine, filters)
    if unit["unit"] == "user":
        verdicts.append(f"unit of analysis: the user ({unit['why']})")
    if len(names) >= 2:
        _between(report, engine, filters, sample, control, correction, seed)
        if segment_by is not None:
            chosen = report["comparisons"]["control"]
            report["segments"] = _segments(engine, filters, segment_by, chosen, labels, correction, seed, unit["unit"])
            verdicts.extend(report["segments"].get("verdicts") or [report["segments"].get("error", "")])
    elif names:
        verdicts.append(f"only {names[0]} answered traffic: no between-version tests")
    _quality(report, verdicts)
    latest = _sample_ratio(report, engine, filters, names, unit["unit"] == "user")
    exposure = _exposure(engine, filters)
    if exposure is not None:
        report["health"] = {"multiple_exposure": exposure}
        if exposure["share"] > MULTIPLE_EXPOSURE_WARN:
            verdicts.append(f"WARNING: {exposure['share']:.1%} of {exposure['users']} sticky users were answered by "
                            "more than one version (routing changed under them, or forced headers): their requests "
                            "mix the arms, so the comparison between versions is diluted")
    srm = None
    if latest is not None:
        config_hash, weights = latest
        srm = sequential.srm_test(engine, _srm_units(filters, config_hash, unit["unit"] == "user"),
                                  parse_weights_tag(weights), report["tests"].get("srm"))
    slices = sequential.Slices(engine, filters.sql("p", "primary"), labels, _labels_cte(engine), _RIGHT)
    report["sequential"] = sequential.sequential_section(report, slices, names, srm)
    if report["shadow_versions"]:
        report["shadow"] = _shadow(engine, filters, labels, seed)
        verdicts.extend(report["shadow"]["verdicts"])
    report["recommendation"] = recommend(report, max_slowdown)
    report["bandit"] = _bandit(engine, filters)
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


def _latency_test(counts: pd.DataFrame, sample: pd.DataFrame, base: str, other: str, medians: dict[str, float],
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


def _between(report: dict[str, Any], engine: Engine, f: Filters, sample: pd.DataFrame, control: str | None,
             correction: str, seed: int) -> None:
    names, verdicts, tests, labels = list(report["versions"]), report["verdicts"], report["tests"], report["labels"]
    versions = report["versions"]
    table = np.array([[versions[v]["classes"][lbl] for lbl in labels] for v in names])
    tests["class_chi2"] = st.class_chi2(table)
    verdicts.append(st.class_verdict(tests["class_chi2"], names))
    counts = _latency_counts(engine, f)
    medians = {v: versions[v]["latency_ms"]["p50"] for v in names}
    latency = {v: _latency_test(counts, sample, a, v, medians, seed) for a in names[:1] for v in names[1:]}
    tests["latency_mwu"] = latency[names[1]]
    if len(names) > 2:
        tests["latency_mwu_all"] = list(latency.values())
    for v, res in latency.items():
        verdicts.append(st.latency_verdict(names[0], v, res))
    chosen = control if control in names else names[0]
    if control is not None and control not in names:
        verdicts.append(f"the control {control} answered no traffic in this range: {chosen} is the control")
    if report["unit"]["unit"] == "user":
        per_user = _per_user(engine, f, labels)
        pairs = {v: _clustered(per_user, chosen, v, labels, seed) for v in names if v != chosen}
    else:
        control_latency = {v: latency.get(v) if chosen == names[0] else
                           _latency_test(counts, sample, chosen, v, medians, seed) for v in names if v != chosen}
        pairs = {v: _pair(versions[chosen], versions[v], labels, control_latency[v]) for v in names if v != chosen}
    report["comparisons"] = _family(pairs, chosen, correction, report["unit"]["unit"])
    verdicts.extend(report["comparisons"]["verdicts"])


def _pair(a: dict[str, Any], b: dict[str, Any], labels: list[str], latency: dict[str, Any] | None
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


def _clustered(per_user: pd.DataFrame, control: str, other: str, labels: list[str], seed: int
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


def _family(pairs: dict[str, dict[str, dict[str, Any]]], control: str, correction: str, unit: str) -> dict[str, Any]:
    """One correction family over versions x metrics, as comparisons.compare_to_control builds it."""
    family = [(v, metric) for v, tests in pairs.items() for metric in tests]
    adjusted = adjust([pairs[v][m]["p_value"] for v, m in family], correction)
    verdicts = []
    for (v, metric), p_adj in zip(family, adjusted, strict=True):
        test = pairs[v][metric]
        test["p_adjusted"] = p_adj
        test["significant"] = bool(p_adj < st.ALPHA)
        word = "differs" if test["significant"] else "shows no detectable difference"
        verdicts.append(f"{v} against control {control}: {metric} {word} ({test['test']}, raw "
                        f"{st.fmt_p(test['p_value'])}, {NAMES[correction]}-adjusted p={p_adj:.3g} over "
                        f"{len(family)} tests)")
    return {"control": control, "correction": correction, "correction_name": NAMES[correction], "alpha": st.ALPHA,
            "family_size": len(family), "versions": [control, *pairs], "pairs": pairs, "verdicts": verdicts,
            "unit": unit}


def _srm_units(f: Filters, config_hash: str, by_user: bool) -> str:
    """The randomised units of one configuration as (ts_ms, model_version): its requests, or each
    sticky user once, at their first request."""
    where = _randomised(f, " AND weights <> ''") + f" AND config_hash = {_quote(config_hash)}"
    if by_user:
        return ("SELECT MIN(ts_ms) AS ts_ms, ARG_MIN(model_version, ts_ms) AS model_version FROM predictions "
                f"WHERE {where} AND routing = 'sticky' AND \"user\" IS NOT NULL GROUP BY \"user\"")
    return f"SELECT ts_ms, model_version FROM predictions WHERE {where}"


def _sample_ratio(report: dict[str, Any], engine: Engine, f: Filters, names: list[str],
                  by_user: bool) -> tuple[str, str] | None:
    """The fixed-horizon sample-ratio tests per configuration; returns the latest configuration's hash
    and weights (for the always-valid test), None without randomised traffic."""
    counts = _srm(engine, f, by_user)
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


def _shadow(engine: Engine, f: Filters, labels: list[str], seed: int) -> dict[str, Any]:
    pairs = _shadow_pairs(engine, f)
    n = int(pairs["n"].sum()) if not pairs.empty else 0
    out: dict[str, Any] = {"pairs": n, "agreement": None, "confusion": None, "paired_latency": None, "verdicts": []}
    if n == 0:
        out["verdicts"].append("shadow: no request has both a primary and a shadow record yet")
        return out
    out["primary"] = ", ".join(sorted(pairs["version_p"].astype(str).unique()))
    out["candidate"] = ", ".join(sorted(pairs["version_s"].astype(str).unique()))
    same = pairs["prediction_p"].astype(str) == pairs["prediction_s"].astype(str)
    agree = int(pairs.loc[same, "n"].sum())
    ci = st.stats.binomtest(agree, n).proportion_ci(confidence_level=0.95, method="wilson")
    out["agreement"] = {"n": n, "agree": agree, "rate": agree / n, "ci": [float(ci.low), float(ci.high)]}
    matrix = (pairs.assign(p=pairs["prediction_p"].astype(str), s=pairs["prediction_s"].astype(str))
              .pivot_table(index="p", columns="s", values="n", aggfunc="sum", fill_value=0)
              .reindex(index=labels, columns=labels, fill_value=0))
    out["confusion"] = {"rows": "primary", "columns": "candidate", "labels": labels,
                        "matrix": matrix.to_numpy().astype(int).tolist()}
    ag = out["agreement"]
    out["verdicts"].append(f"shadow: {out['candidate']} agrees with {out['primary']} on {ag['rate']:.1%} of {ag['n']} "
                           f"requests (95% CI {ag['ci'][0]:.1%}-{ag['ci'][1]:.1%})")
    known = pairs[pairs["right_p"].notna()]
    if not known.empty:
        rp, rs, k = known["right_p"].astype(int), known["right_s"].astype(int), known["n"].astype(int)
        only_p, only_c, total = int(k[(rp == 1) & (rs == 0)].sum()), int(k[(rp == 0) & (rs == 1)].sum()), int(k.sum())
        pvalue = float(st.stats.binomtest(only_c, only_p + only_c, 0.5).pvalue) if only_p + only_c else 1.0
        res = {"test": "mcnemar_exact", "n": total, "primary_accuracy": float(k[rp == 1].sum() / total),
               "candidate_accuracy": float(k[rs == 1].sum() / total), "only_primary_right": only_p,
               "only_candidate_right": only_c, "p_value": pvalue, "significant": bool(pvalue < st.ALPHA)}
        out["paired_accuracy"] = res
        word = "differs" if res["significant"] else "shows no detectable difference"
        out["verdicts"].append(
            f"shadow: paired accuracy on {res['n']} labelled rows {word}: {out['candidate']} "
            f"{res['candidate_accuracy']:.1%} against {out['primary']} {res['primary_accuracy']:.1%} (exact McNemar, "
            f"{res['only_candidate_right']} rows right only by the candidate, {res['only_primary_right']} only by "
            f"the primary, {st.fmt_p(res['p_value'])})")
    lat = _paired_latency_sample(engine, f, n, seed)
    out["paired_latency"] = pl = st.paired_latency(lat["latency_p"].to_numpy(), lat["latency_s"].to_numpy(), seed=seed)
    if pl is not None:
        pl["n"] = n
        word = "slower" if pl["median_diff_ms"] > 0 else "faster"
        sig = pl["p_value"] < st.ALPHA
        out["verdicts"].append(
            f"shadow: {out['candidate']} is {word if sig else 'not detectably different'} on the same inputs: "
            f"{pl['median_diff_ms']:+.3f} ms median (95% CI {pl['median_diff_ci'][0]:+.3f} to "
            f"{pl['median_diff_ci'][1]:+.3f}), Wilcoxon {st.fmt_p(pl['p_value'])}")
    return out


def _bandit(engine: Engine, f: Filters) -> dict[str, Any] | None:
    """The bandit's section (experiments/report/bandit.py's form) from per-arm weighted sums: the
    self-normalised IPW mean and its interval need only sum w, w^2, w r, w^2 r and w^2 r^2."""
    routings = ", ".join(_quote(r) for r in sorted(RANDOMISED))
    assigned = "{p}routing IN ({r}) AND {p}assignment_probability IS NOT NULL AND NOT ISNAN({p}assignment_probability)"
    periods = engine.frame(f"SELECT weights_version, weights, MIN(ts_ms) AS ts_ms FROM predictions "
                           f"WHERE {f.sql(role='primary')} AND {assigned.format(p='', r=routings)} "
                           "GROUP BY weights_version, weights")
    if periods.empty or periods["weights"].nunique() < 2:
        return None
    p_where = f"{f.sql('p', 'primary')} AND {assigned.format(p='p.', r=routings)}"
    join = ("FROM predictions AS p LEFT JOIN labels AS l ON p.request_id = l.request_id "
            f"AND p.row_index = l.row_index WHERE {p_where}")
    sent = engine.frame(f"WITH {_labels_cte(engine)} SELECT COUNT(l.reward) AS n {join}")["n"].iloc[0]
    name, reward = ("feedback", "l.reward") if int(sent or 0) else (
        "correct", f"CASE WHEN l.request_id IS NULL THEN NULL ELSE {_RIGHT} END")
    usable = f"{reward} IS NOT NULL AND p.assignment_probability > 0"
    w = "(1.0 / p.assignment_probability)"
    sums = engine.frame(f"""
        WITH {_labels_cte(engine)}
        SELECT p.model_version AS arm, COUNT(*) AS n, COUNT({reward}) AS labelled,
               SUM(CASE WHEN {usable} THEN 1 ELSE 0 END) AS usable,
               SUM(CASE WHEN {usable} THEN {w} ELSE 0.0 END) AS sum_w,
               SUM(CASE WHEN {usable} THEN {w} * {w} ELSE 0.0 END) AS sum_w2,
               SUM(CASE WHEN {usable} THEN {w} * {reward} ELSE 0.0 END) AS sum_wr,
               SUM(CASE WHEN {usable} THEN {w} * {w} * {reward} ELSE 0.0 END) AS sum_w2r,
               SUM(CASE WHEN {usable} THEN {w} * {w} * {reward} * {reward} ELSE 0.0 END) AS sum_w2r2,
               COALESCE(SUM({reward}), 0.0) AS sum_r,
               SUM(CASE WHEN {reward} IS NOT NULL AND {reward} NOT IN (0, 1) THEN 1 ELSE 0 END) AS non_binary,
               MAX(p.ts_ms) AS last_ts
        {join} GROUP BY p.model_version""")
    arms = {str(r["arm"]): ArmSums(int(r["n"]), int(r["labelled"]), int(r["usable"]), float(r["sum_w"]),
                                   float(r["sum_w2"]), float(r["sum_wr"]), float(r["sum_w2r"]), float(r["sum_w2r2"]),
                                   float(r["sum_r"])) for _, r in sums.iterrows()}
    binary = int(sums["labelled"].sum()) > 0 and int(sums["non_binary"].sum()) == 0
    estimates = estimates_from_sums(arms, binary)
    labelled = {a: s.labelled for a, s in arms.items()}
    timeline: list[dict[str, Any]] = []
    for _, period in periods.sort_values(["ts_ms", "weights_version"]).iterrows():
        if timeline and timeline[-1]["tag"] == period["weights"]:
            continue
        timeline.append({"ts_ms": int(period["ts_ms"]), "tag": period["weights"],
                         "weights": parse_weights_tag(str(period["weights"]))})
    return {
        "reward": name,
        "versions": {arm: _clean(e.to_dict()) for arm, e in estimates.items()},
        "regret": _clean(regret_from_counts(labelled, estimates)),
        "weights_over_time": [{"ts_ms": t["ts_ms"], "weights": t["weights"]} for t in timeline],
        "last_ts_ms": int(sums["last_ts"].max()),
        "note": BANDIT_NOTE,
    }


# -- segments -------------------------------------------------------------------------------------

def _segment_expression(engine: Engine, column: str) -> str | None:
    """The segment's value as SQL ("{p}" for the alias): an input column of the table, or a logged
    header; None when the table has neither."""
    if column.startswith("header:"):
        header = column.removeprefix("header:").lower().replace("'", "")
        return f"JSON_EXTRACT_STRING({{p}}headers, '$.{header}')"
    if f"features.{column}" not in engine.frame("SELECT * FROM predictions LIMIT 0").columns:
        return None
    return f"CAST({{p}}\"features.{column}\" AS VARCHAR)"


def _segments(engine: Engine, f: Filters, column: str, control: str, labels: list[str], correction: str, seed: int,
              unit: str, min_records: int = 20) -> dict[str, Any]:
    """comparisons.by_segment on the engine: the quartiles (or values) of ``column``, then each
    segment's comparisons against the control, narrowed to it; one correction family of their own."""
    value = _segment_expression(engine, column)
    what = (f"header {column.removeprefix('header:')!r} (is it in the gateway's [routing] log_headers?)"
            if column.startswith("header:") else f"{column!r} (an input column of the model)")
    if value is None:
        return {"by": column, "error": f"no record carries a value of {what}"}
    primary = f.narrowed(f"{value} IS NOT NULL")
    v = value.format(p="")
    stats = engine.frame(f"""
        SELECT COUNT(*) AS n, COUNT(TRY_CAST({v} AS DOUBLE)) AS numeric, COUNT(DISTINCT {v}) AS distinct_,
               {', '.join(f'QUANTILE_CONT(TRY_CAST({v} AS DOUBLE), {q}) AS q{i}' for i, q in enumerate(QUARTILES))}
        FROM predictions WHERE {primary.sql(role='primary')}""").iloc[0]
    if int(stats["n"]) == 0:
        return {"by": column, "error": f"no record carries a value of {what}"}
    if int(stats["numeric"]) == int(stats["n"]) and int(stats["distinct_"]) > SEGMENT_BINS:
        edges = sorted({float(stats[f"q{i}"]) for i in range(len(QUARTILES))})
        # pandas' own interval labels for these edges, as qcut makes them (precision 3, lowest included)
        names = [str(c) for c in pd.cut(pd.Series(edges), bins=edges, include_lowest=True, precision=3)
                 .cat.categories]
        cases = " ".join(f"WHEN TRY_CAST({value} AS DOUBLE) <= CAST('{edge!r}' AS DOUBLE) THEN {_quote(name)}"
                         for edge, name in zip(edges[1:], names, strict=True))
        segment = f"CASE {cases} ELSE {_quote(names[-1])} END"
        how = f"quartiles of the numeric column ({len(names)} bins)"
    else:
        segment, how = value, "the column's values"
    seg_sql = segment.format(p="")
    parts = engine.frame(f"SELECT {seg_sql} AS seg, model_version, COUNT(*) AS n FROM predictions "
                         f"WHERE {primary.sql(role='primary')} GROUP BY 1, 2")
    results: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for seg in sorted(parts["seg"].astype(str).unique()):
        rows = parts[parts["seg"].astype(str) == seg]
        names = sorted(rows["model_version"].astype(str))
        if control not in names or len(names) < 2 or int(rows["n"].sum()) < min_records:
            skipped[seg] = (f"{int(rows['n'].sum())} records, versions {', '.join(names)}: too few to compare "
                            f"with {control}")
            continue
        results[seg] = _compare_in(engine, primary.narrowed(f"{segment} = {_quote(seg)}"), names, control, labels,
                                   unit, seed)
    return segment_family(column, how, control, results, skipped, correction)


def _compare_in(engine: Engine, f: Filters, names: list[str], control: str, labels: list[str], unit: str,
                seed: int) -> dict[str, Any]:
    """compare_to_control (no correction) on the rows ``f`` selects, from their aggregates."""
    if unit == "user":
        per_user = _per_user(engine, f, labels)
        pairs = {v: _clustered(per_user, control, v, labels, seed) for v in names if v != control}
        return _family(pairs, control, "none", unit)
    versions = _versions(engine, f)
    versions = versions[versions["role"] == "primary"]
    classes, accuracy = _classes(engine, f), _accuracy(engine, f)
    counts = {("primary", str(v)): int(n) for v, n in zip(versions["model_version"], versions["n"], strict=True)}
    sample = _sample(engine, f.narrowed("{p}role = 'primary'"), counts, seed)
    latency_counts = _latency_counts(engine, f)
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
    pairs = {v: _pair(summaries[control], summaries[v], labels,
                      _latency_test(latency_counts, sample, control, v, medians, seed)) for v in names if v != control}
    return _family(pairs, control, "none", unit)

