"""The report's summary runs: one parent run holding the report, one child run per version, for
MLflow's Compare Runs view."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from gateway.domain import contract
from gateway.mlflow.client import get_or_create_experiment


def _summary_metrics(s: dict[str, Any], pvals: dict[str, Any]) -> dict[str, float]:
    lat = s["latency_ms"]
    metrics = {"count": s["count"], "share": s["share"], "latency_mean_ms": lat["mean"],
               "latency_p50_ms": lat["p50"], "latency_p95_ms": lat["p95"], "latency_p99_ms": lat["p99"],
               **{k: v for k, v in pvals.items() if v is not None}}
    if s.get("request_time_ms"):
        own = s["request_time_ms"]
        metrics.update({"request_time_p50_ms": own["p50"], "request_time_p99_ms": own["p99"]})
    if s.get("batch_rows_mean") is not None:
        metrics["batch_rows_mean"] = s["batch_rows_mean"]
    for lbl, share in (s.get("class_shares") or {}).items():
        metrics[contract.param_name(f"class_share_{lbl}")] = share
        metrics[contract.param_name(f"class_count_{lbl}")] = s["classes"][lbl]
    if s.get("predictions"):
        metrics.update({f"prediction_{k}": v for k, v in s["predictions"].items() if v is not None})
    if s.get("accuracy"):
        metrics["accuracy"] = s["accuracy"]["rate"]
        metrics["labelled"] = s["accuracy"]["n"]
    if s.get("error"):
        metrics["mae"] = s["error"]["mae"]
        metrics["labelled"] = s["error"]["n"]
    return metrics


def log_summary_runs(report: dict[str, Any], tracking_uri: str, html: str | None, experiment: str) -> dict[str, Any]:
    """One parent run with the report files, one child run per version; return ids and the Compare URL."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    client = MlflowClient(tracking_uri=tracking_uri)
    exp_id = get_or_create_experiment(client, experiment)
    now = int(time.time() * 1000)
    rid = report["report_id"]
    parent = client.create_run(exp_id, start_time=now, run_name=f"ab-report-{rid[:8]}", tags={
        "report_id": rid, "source_experiment": str(report.get("experiment")), "kind": "ab-report",
        "filters": json.dumps(report.get("filters", {})), "partial": str(bool(report.get("partial"))).lower()})
    parent_id = parent.info.run_id
    client.log_text(parent_id, json.dumps(report, indent=2), "report.json")
    if html is not None:
        client.log_text(parent_id, html, "report.html")
    tests = report["tests"]
    pvals = {"class_chi2_p_value": (tests.get("class_chi2") or {}).get("p_value"),
             "prediction_mwu_p_value": (tests.get("prediction_mwu") or {}).get("p_value"),
             "prediction_ks_p_value": (tests.get("prediction_ks") or {}).get("p_value"),
             "latency_mwu_p_value": (tests.get("latency_mwu") or {}).get("p_value"),
             "srm_p_value": (tests.get("srm") or {}).get("p_value")}
    for name, t in ((report.get("sequential") or {}).get("tests") or {}).items():
        # "sequential_p_...": sorted after the counts and latencies in the Compare Runs table
        pvals[contract.param_name(f"sequential_p_{name}")] = t["always_valid"]["p_value"]
    if report.get("shadow") and report["shadow"].get("agreement"):
        pvals["shadow_agreement"] = report["shadow"]["agreement"]["rate"]
    if report.get("shadow") and report["shadow"].get("difference"):
        pvals["shadow_mean_abs_diff"] = report["shadow"]["difference"]["mean_abs_diff"]
    child_ids = []
    comparisons = report.get("comparisons") or {}
    family = {"control": comparisons.get("control", ""), "correction": comparisons.get("correction", ""),
              "correction_family_size": str(comparisons.get("family_size", ""))} if comparisons else {}
    for role, versions in (("primary", report["versions"]), ("shadow", report["shadow_versions"])):
        for version, s in versions.items():
            metrics = _summary_metrics(s, pvals)
            bandit = ((report.get("bandit") or {}).get("versions") or {}).get(version) if role == "primary" else None
            if bandit:  # the bias-corrected mean reward under moving weights, beside the naive one
                metrics.update({f"bandit_{k}": v for k, v in bandit.items()
                                if k in ("ipw_mean", "ipw_low", "ipw_high", "naive_mean") and v is not None})
            if role == "primary":  # this version against the control: raw and adjusted, side by side
                for metric, t in (comparisons.get("pairs") or {}).get(version, {}).items():
                    metrics[contract.param_name(f"vs_control_{metric}_p_value")] = t["p_value"]
                    metrics[contract.param_name(f"vs_control_{metric}_p_adjusted")] = t["p_adjusted"]
            run = client.create_run(exp_id, start_time=now, run_name=f"{version} ({role})", tags={
                "model_version": version, "role": role, "report_id": rid, "mlflow.parentRunId": parent_id,
                **family, **({"is_control": str(version == family.get("control")).lower()} if family else {})})
            client.log_batch(run.info.run_id,
                             metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                             params=[Param("records", str(report["n_records"])),
                                     Param("source_experiment", str(report.get("experiment")))])
            client.set_terminated(run.info.run_id)
            child_ids.append(run.info.run_id)
    client.set_terminated(parent_id)
    base = tracking_uri.rstrip("/")
    url = (f"{base}/#/compare-runs?runs={json.dumps(child_ids, separators=(',', ':'))}"
           f"&experiments={json.dumps([exp_id], separators=(',', ':'))}")
    return {"experiment": experiment, "experiment_id": exp_id, "parent_run_id": parent_id,
            "summary_run_ids": child_ids, "compare_url": url, "runs_url": f"{base}/#/experiments/{exp_id}/runs"}
