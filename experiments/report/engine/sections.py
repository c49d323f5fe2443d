"""The shadow pairs' and the bandit's sections on the engine path."""

from __future__ import annotations

from typing import Any

from experiments.report import statistics as st
from experiments.report.analyse import paired_accuracy_verdict, paired_latency_verdict
from experiments.report.bandit import NOTE as BANDIT_NOTE
from experiments.report.bandit import _clean
from experiments.report.engine import queries as q
from experiments.report.engine.engines import Engine
from experiments.report.engine.queries import Filters
from gateway.domain.records import RANDOMISED
from gateway.routing.router import parse_weights_tag
from gateway.stats.ipw import ArmSums, estimates_from_sums, regret_from_counts


def shadow(engine: Engine, f: Filters, labels: list[str], seed: int) -> dict[str, Any]:
    pairs = q.shadow_pairs(engine, f)
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
        out["verdicts"].append(paired_accuracy_verdict(out, res))
    lat = q.paired_latency_sample(engine, f, n, seed)
    out["paired_latency"] = pl = st.paired_latency(lat["latency_p"].to_numpy(), lat["latency_s"].to_numpy(), seed=seed)
    if pl is not None:
        pl["n"] = n
        out["verdicts"].append(paired_latency_verdict(out, pl))
    return out


def bandit(engine: Engine, f: Filters) -> dict[str, Any] | None:
    """The bandit's section (experiments/report/bandit.py's form) from per-arm weighted sums: the
    self-normalised IPW mean and its interval need only sum w, w^2, w r, w^2 r and w^2 r^2."""
    routings = ", ".join(q.quote(r) for r in sorted(RANDOMISED))
    assigned = "{p}routing IN ({r}) AND {p}assignment_probability IS NOT NULL AND NOT ISNAN({p}assignment_probability)"
    periods = engine.frame(f"SELECT weights_version, weights, MIN(ts_ms) AS ts_ms FROM predictions "
                           f"WHERE {f.sql(role='primary')} AND {assigned.format(p='', r=routings)} "
                           "GROUP BY weights_version, weights")
    if periods.empty or periods["weights"].nunique() < 2:
        return None
    p_where = f"{f.sql('p', 'primary')} AND {assigned.format(p='p.', r=routings)}"
    join = ("FROM predictions AS p LEFT JOIN labels AS l ON p.request_id = l.request_id "
            f"AND p.row_index = l.row_index WHERE {p_where}")
    sent = engine.frame(f"SELECT COUNT(l.reward) AS n {join}")["n"].iloc[0]
    name, reward = ("feedback", "l.reward") if int(sent or 0) else (
        "correct", f"CASE WHEN l.request_id IS NULL THEN NULL ELSE {q.RIGHT} END")
    usable = f"{reward} IS NOT NULL AND p.assignment_probability > 0"
    w = "(1.0 / p.assignment_probability)"
    sums = engine.frame(f"""
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
