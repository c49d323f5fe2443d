"""The report's analysis: per-version summaries and the tests between versions (pure: a table of
records in, a JSON-ready dict out)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from experiments.report import statistics as st
from experiments.report.comparisons import by_segment, compare_to_control
from experiments.report.recommend import DEFAULT_MAX_SLOWDOWN, recommend
from experiments.report.sequential import sequential_section
from gateway.domain.label_rule import correct_column
from gateway.domain.records import RANDOMISED
from gateway.mlflow.readback import REGRESSOR
from gateway.routing.router import parse_weights_tag


class NoRuns(Exception):
    pass




def labels_of(records: pd.DataFrame) -> list[Any]:
    """Every class label seen, in natural order (numbers numerically, then text)."""
    return sorted(records["prediction"].dropna().unique().tolist(), key=lambda v: (isinstance(v, str), str(v)
                  if isinstance(v, str) else float(v)))


def _group_summary(group: pd.DataFrame, total: int, seed: int, labels: list[Any] | None) -> dict[str, Any]:
    n = len(group)
    out: dict[str, Any] = {
        "count": n,
        "share": n / total if total else 0.0,
        "latency_ms": st.latency_summary(group["latency_ms"].to_numpy(), seed=seed),
    }
    # Under batching latency_ms is the shared model call's; the request's own time in the gateway and
    # the call's size say what each request saw (absent in runs logged before batching).
    own = group["request_time_ms"].dropna().to_numpy(dtype=float) if "request_time_ms" in group else np.array([])
    if own.size:
        out["request_time_ms"] = st.latency_summary(own, seed=seed)
    sizes = group["batch_rows"].dropna().to_numpy(dtype=float) if "batch_rows" in group else np.array([])
    if sizes.size:
        out["batch_rows_mean"] = float(sizes.mean())
    if labels is None:  # a regressor
        out["predictions"] = st.value_summary(group["value"].to_numpy(dtype=float))
        errors = group["abs_error"].to_numpy(dtype=float)
        out["error"] = st.error_summary(errors)
        return out
    counts = group["prediction"].astype(str).value_counts()
    classes = {str(lbl): int(counts.get(str(lbl), 0)) for lbl in labels}
    out["classes"] = classes
    out["class_shares"] = {lbl: k / n for lbl, k in classes.items()}
    out["accuracy"] = st.accuracy(group["correct"].to_numpy(dtype=float))
    return out


def analyse(records: pd.DataFrame, seed: int = 0, control: str | None = None,
            correction: str = "holm", segment_by: str | None = None,
            max_slowdown: float = DEFAULT_MAX_SLOWDOWN) -> dict[str, Any]:
    """The whole report, as a JSON-ready dict (its schema: docs/report.md). Every version is compared
    with ``control`` (default: the first version by name) on every metric, the p-values adjusted
    across all of those tests by ``correction`` (holm, bh or none)."""
    if records.empty:
        raise NoRuns("no prediction records")
    defaults = {"row_index": 0, "kind": "classifier", "value": np.nan, "correct": np.nan, "abs_error": np.nan,
                "user": None}
    records = records.assign(**{k: v for k, v in defaults.items() if k not in records.columns})
    regressor = bool((records["kind"] == REGRESSOR).all())
    labels = None if regressor else labels_of(records)
    primary = records[records["role"] == "primary"]
    shadow = records[records["role"] == "shadow"]
    report = _summaries(records, primary, shadow, regressor, labels, seed)
    names = list(report["versions"])
    verdicts: list[str] = report["verdicts"]
    report["unit"] = unit = unit_of_analysis(primary)
    if unit["unit"] == "user":
        verdicts.append(f"unit of analysis: the user ({unit['why']})")
    if len(names) >= 2:
        _between_versions(report, primary, labels, control, correction, segment_by, seed)
    elif names:
        verdicts.append(f"only {names[0]} answered traffic: no between-version tests")
    _quality(report, verdicts)
    srm_group = _sample_ratio(primary, report, names, verdicts, by_user=unit["unit"] == "user")
    _exposure(report, primary, verdicts)
    report["sequential"] = sequential_section(report, primary, names, srm_group)
    if not shadow.empty:
        report["shadow"] = shadow_analysis(primary, shadow, seed, labels)
        verdicts.extend(report["shadow"]["verdicts"])
    report["recommendation"] = recommend(report, max_slowdown)
    return report


def _summaries(records: pd.DataFrame, primary: pd.DataFrame, shadow: pd.DataFrame, regressor: bool,
               labels: list[Any] | None, seed: int) -> dict[str, Any]:
    """The report's frame: each version's summary (answered and shadow-scored), the tests still empty."""
    report: dict[str, Any] = {"n_records": len(records), "kind": REGRESSOR if regressor else "classifier",
                              "labels": None if labels is None else [str(lbl) for lbl in labels],
                              "versions": {}, "shadow_versions": {},
                              "tests": {"class_chi2": None, "latency_mwu": None, "srm": None}, "shadow": None,
                              "verdicts": []}
    if regressor:
        report["tests"] = {"prediction_mwu": None, "prediction_ks": None, "latency_mwu": None, "srm": None}
    for version, group in sorted(primary.groupby("model_version"), key=lambda kv: str(kv[0])):
        report["versions"][str(version)] = _group_summary(group, len(primary), seed, labels)
    for version, group in sorted(shadow.groupby("model_version"), key=lambda kv: str(kv[0])):
        report["shadow_versions"][str(version)] = _group_summary(group, len(shadow), seed, labels)
    return report


def _between_versions(report: dict[str, Any], primary: pd.DataFrame, labels: list[Any] | None,
                      control: str | None, correction: str, segment_by: str | None, seed: int) -> None:
    """Two or more versions: the classes' chi-square, latency (and a regressor's values) of each against
    the first, then every metric against the control with adjusted p-values, per segment if asked."""
    names, verdicts, tests = list(report["versions"]), report["verdicts"], report["tests"]
    unit = report["unit"]["unit"]
    if labels is not None:
        table = np.array([[report["versions"][v]["classes"][str(lbl)] for lbl in labels] for v in names])
        tests["class_chi2"] = st.class_chi2(table)
        verdicts.append(st.class_verdict(tests["class_chi2"], names))
    base = names[0]
    pairs = []
    for other in names[1:]:
        a = primary.loc[primary["model_version"] == base]
        b = primary.loc[primary["model_version"] == other]
        res = st.latency_mwu(a["latency_ms"].to_numpy(), b["latency_ms"].to_numpy(), seed=seed)
        if res is not None:
            res = {"a": base, "b": other, **res}
        pairs.append(res)
        verdicts.append(st.latency_verdict(base, other, res))
        if labels is None:
            va, vb = a["value"].to_numpy(dtype=float), b["value"].to_numpy(dtype=float)
            mwu = st.values_mwu(va, vb, seed=seed)
            tests.setdefault("prediction_mwu", None)
            if tests["prediction_mwu"] is None and mwu is not None:
                tests["prediction_mwu"] = {"a": base, "b": other, **mwu}
                tests["prediction_ks"] = st.distribution_ks(va, vb)
            verdicts.append(st.value_verdict(base, other, mwu, st.distribution_ks(va, vb)))
    tests["latency_mwu"] = pairs[0]
    if len(pairs) > 1:
        tests["latency_mwu_all"] = pairs
    chosen = control if control in names else names[0]
    if control is not None and control not in names:
        verdicts.append(f"the control {control} answered no traffic in this range: {chosen} is the control")
    report["comparisons"] = compare_to_control(primary, names, chosen, labels, correction=correction, seed=seed,
                                               unit=unit)
    verdicts.extend(report["comparisons"]["verdicts"])
    if segment_by is not None:
        report["segments"] = by_segment(primary, segment_by, chosen, labels, correction=correction, seed=seed,
                                        unit=unit)
        verdicts.extend(report["segments"].get("verdicts") or [report["segments"].get("error", "")])


def _exposure(report: dict[str, Any], primary: pd.DataFrame, verdicts: list[str]) -> None:
    """Sticky users answered by more than one version: said in ``health``, warned of past a share."""
    exposure = multiple_exposure(primary)
    if exposure is None:
        return
    report["health"] = {"multiple_exposure": exposure}
    if exposure["share"] > MULTIPLE_EXPOSURE_WARN:
        verdicts.append(f"WARNING: {exposure['share']:.1%} of {exposure['users']} sticky users were answered by "
                        f"more than one version (routing changed under them, or forced headers): their requests "
                        "mix the arms, so the comparison between versions is diluted")


def _quality(report: dict[str, Any], verdicts: list[str]) -> None:
    """Accuracy (classifiers) or mean absolute error (regressors) from ground-truth feedback."""
    if report["kind"] == REGRESSOR:
        for v, s in report["versions"].items():
            if s["error"]:
                verdicts.append(f"mean absolute error of {v}: {s['error']['mae']:.4g} over {s['error']['n']} "
                                f"labelled predictions")
        return
    labelled = {v: s["accuracy"] for v, s in report["versions"].items() if s["accuracy"]}
    for v, acc in labelled.items():
        verdicts.append(f"accuracy of {v}: {acc['rate']:.1%} of {acc['n']} labelled predictions "
                        f"(95% CI {acc['ci'][0]:.1%}-{acc['ci'][1]:.1%})")
    if len(labelled) >= 2:
        table = np.array([[a["correct"], a["n"] - a["correct"]] for a in labelled.values()])
        res = st.accuracy_difference(table)
        if res is not None:  # the figures the test was run on, for the tables that show it
            res = {**res, "accuracy": {v: round(a["rate"], 4) for v, a in labelled.items()},
                   "labelled": {v: a["n"] for v, a in labelled.items()}}
        report["tests"]["accuracy"] = res
        if res is not None:
            verdicts.append(f"accuracy {'differs' if res['significant'] else 'shows no detectable difference'} "
                            f"between {' and '.join(labelled)} ({res['test']}, {st.fmt_p(res['p_value'])})")


MULTIPLE_EXPOSURE_WARN = 0.01


def unit_of_analysis(primary: pd.DataFrame) -> dict[str, Any]:
    """The randomisation unit: the user when most randomised requests were routed by a sticky user key
    (each user's requests all go one way, so they are not independent samples), else the request."""
    randomised = primary[primary["routing"].isin(RANDOMISED) & (primary["row_index"] == 0)]
    sticky = randomised[(randomised["routing"] == "sticky") & randomised["user"].notna()]
    if len(randomised) and len(sticky) * 2 >= len(randomised):
        users = int(sticky["user"].nunique())
        return {"unit": "user", "users": users, "requests": len(sticky),
                "why": f"{len(sticky)} of {len(randomised)} randomised requests were routed by a sticky user key, "
                       f"{users} users: SRM counts users, per-request metrics are clustered by user"}
    return {"unit": "request", "why": "requests were routed independently (weighted)"}


def multiple_exposure(primary: pd.DataFrame) -> dict[str, Any] | None:
    """Sticky users answered by more than one version: each should have seen one."""
    users = primary[primary["user"].notna()]
    if users.empty:
        return None
    versions = users.groupby("user")["model_version"].nunique()
    mixed = int((versions > 1).sum())
    return {"users": len(versions), "in_more_than_one_version": mixed, "share": mixed / len(versions),
            "warn_above": MULTIPLE_EXPOSURE_WARN}


def _sample_ratio(primary: pd.DataFrame, report: dict[str, Any], names: list[str], verdicts: list[str],
                  by_user: bool = False) -> tuple[pd.DataFrame, dict[str, float]] | None:
    """Sample-ratio mismatch, per configuration period, on randomised traffic only (one count per
    request: a batch is one routing decision; with ``by_user``, one count per sticky user: the unit
    that was randomised). Returns the latest period's requests and weights."""
    randomised = primary[primary["routing"].isin(RANDOMISED) & (primary["weights"] != "")
                         & (primary["row_index"] == 0)]
    if by_user:
        randomised = randomised[(randomised["routing"] == "sticky") & randomised["user"].notna()]
    by_config = {}
    for (config_hash, weights), group in randomised.groupby(["config_hash", "weights"]):
        units = group.drop_duplicates("user") if by_user else group
        res = st.srm(units["model_version"].value_counts().to_dict(), parse_weights_tag(str(weights)))
        if res is not None:
            by_config[str(config_hash)] = {**res, "n": len(units), "unit": "user" if by_user else "request"}
    if by_config:
        latest = max(by_config, key=lambda h: randomised.loc[randomised["config_hash"] == h, "ts_ms"].max())
        report["tests"]["srm"] = {"config_hash": latest, **by_config[latest]}
        if len(by_config) > 1:
            report["tests"]["srm_by_config"] = by_config
        for h, res in by_config.items():
            verdicts.append(st.srm_verdict(res, f" (config {h}, counting {res['unit']}s)"))
        latest_group = randomised[randomised["config_hash"] == latest]
        if by_user:  # the always-valid check counts each user once too, at their first request
            latest_group = latest_group.sort_values("ts_ms").drop_duplicates("user")
        return latest_group, parse_weights_tag(str(latest_group["weights"].iloc[0]))
    if len(names) >= 2:
        verdicts.append(st.srm_verdict(None))
    return None


def _paired_accuracy(pairs: pd.DataFrame, out: dict[str, Any]) -> None:
    """Shadow pairs with ground truth: both answers judged against the same true label, McNemar."""
    truth = pairs["true_label_p"] if "true_label_p" in pairs else pd.Series(dtype=object)
    known = truth.notna() if len(truth) else pd.Series(False, index=pairs.index)
    if not known.any():
        return
    res = st.mcnemar_exact(correct_column(pairs.loc[known, "prediction_p"], truth[known]).to_numpy(),
                           correct_column(pairs.loc[known, "prediction_s"], truth[known]).to_numpy())
    out["paired_accuracy"] = res
    if res is not None:
        out["verdicts"].append(paired_accuracy_verdict(out, res))


def paired_accuracy_verdict(out: dict[str, Any], res: dict[str, Any]) -> str:
    word = "differs" if res["significant"] else "shows no detectable difference"
    return (f"shadow: paired accuracy on {res['n']} labelled rows {word}: {out['candidate']} "
            f"{res['candidate_accuracy']:.1%} against {out['primary']} {res['primary_accuracy']:.1%} (exact McNemar, "
            f"{res['only_candidate_right']} rows right only by the candidate, {res['only_primary_right']} only by "
            f"the primary, {st.fmt_p(res['p_value'])})")


def paired_latency_verdict(out: dict[str, Any], pl: dict[str, Any]) -> str:
    word = "slower" if pl["median_diff_ms"] > 0 else "faster"
    sig = pl["p_value"] < st.ALPHA
    return (f"shadow: {out['candidate']} is {word if sig else 'not detectably different'} on the same inputs: "
            f"{pl['median_diff_ms']:+.3f} ms median (95% CI {pl['median_diff_ci'][0]:+.3f} to "
            f"{pl['median_diff_ci'][1]:+.3f}), Wilcoxon {st.fmt_p(pl['p_value'])}")


def shadow_analysis(primary: pd.DataFrame, shadow: pd.DataFrame, seed: int = 0,
                    labels: list[Any] | None = None) -> dict[str, Any]:
    pairs = primary.merge(shadow, on=["request_id", "row_index"], suffixes=("_p", "_s"))
    out: dict[str, Any] = {"pairs": len(pairs), "agreement": None, "confusion": None, "paired_latency": None,
                           "verdicts": []}
    if pairs.empty:
        out["verdicts"].append("shadow: no request has both a primary and a shadow record yet")
        return out
    out["primary"] = ", ".join(sorted(pairs["model_version_p"].unique()))
    out["candidate"] = ", ".join(sorted(pairs["model_version_s"].unique()))
    if labels is None:
        out["difference"] = st.paired_values(pairs["value_p"].to_numpy(dtype=float),
                                             pairs["value_s"].to_numpy(dtype=float))
        d = out["difference"]
        out["verdicts"].append(
            f"shadow: {out['candidate']} differs from {out['primary']} by {d['mean_abs_diff']:.4g} on average "
            f"(mean absolute difference over {d['n']} rows)"
            + (f"; correlation {d['pearson_r']:.3f}" if d["pearson_r"] is not None else ""))
    else:
        names = [str(lbl) for lbl in labels]
        p_labels, s_labels = pairs["prediction_p"].astype(str), pairs["prediction_s"].astype(str)
        out["agreement"] = st.agreement(p_labels.to_numpy(), s_labels.to_numpy())
        matrix = pd.crosstab(pd.Categorical(p_labels, categories=names), pd.Categorical(s_labels, categories=names),
                             dropna=False)
        out["confusion"] = {"rows": "primary", "columns": "candidate", "labels": names,
                            "matrix": matrix.to_numpy().astype(int).tolist()}
        ag = out["agreement"]
        out["verdicts"].append(
            f"shadow: {out['candidate']} agrees with {out['primary']} on {ag['rate']:.1%} of {ag['n']} requests "
            f"(95% CI {ag['ci'][0]:.1%}-{ag['ci'][1]:.1%})")
        _paired_accuracy(pairs, out)
    out["paired_latency"] = st.paired_latency(pairs["latency_ms_p"].to_numpy(), pairs["latency_ms_s"].to_numpy(),
                                              seed=seed)
    pl = out["paired_latency"]
    if pl is not None:
        out["verdicts"].append(paired_latency_verdict(out, pl))
    return out
