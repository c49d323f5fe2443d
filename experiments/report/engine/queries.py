"""The engine path's queries, each written once in DuckDB's dialect (Spark gets them through sqlglot,
engines.py). Every function returns a small frame of aggregates; none returns rows but a sample."""

from __future__ import annotations

import math
import time
from typing import Any

import pandas as pd

from experiments.report import statistics as st
from experiments.report.analyse import MULTIPLE_EXPOSURE_WARN
from experiments.report.engine.engines import Engine
from gateway.domain.records import RANDOMISED

SAMPLE_ROWS = 20_000  # per version, for the bootstrap intervals (statistics.py thins to as many)
SAMPLE_MODULUS = 1_000_003  # a prime: rows whose hash falls below rate x this are sampled
PAIRED_SAMPLE = 200_000
LATENCY = "ROUND(inference_time_ms, 3)"  # the gateway logs microseconds
QUANTILES = (0.5, 0.95, 0.99)

def quote(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


class Filters:
    """since/until (epoch ms), config hash and role, as SQL over the table; ``day`` bounds let the
    engine skip the day partitions outside the range."""

    def __init__(self, since: int | None = None, until: int | None = None, config_hash: str | None = None,
                 role: str = "all", extra: tuple[str, ...] = (), judged: str | None = None) -> None:
        self.since, self.until, self.config_hash, self.role = since, until, config_hash, role
        self.extra = extra  # further conditions, "{p}" standing for the table's alias and a dot
        self.judged = judged  # a prepared relation holding judged_sql(self), if any (prepare_judged)

    def narrowed(self, condition: str) -> Filters:
        return Filters(self.since, self.until, self.config_hash, self.role, (*self.extra, condition))

    def sql(self, alias: str = "", role: str | None = None) -> str:
        p = f"{alias}." if alias else ""
        clauses = [f"{p}inference_time_ms IS NOT NULL", f"{p}prediction IS NOT NULL"]
        if self.since is not None:
            clauses += [f"{p}ts_ms >= {int(self.since)}", f"{p}day >= {quote(day(self.since))}"]
        if self.until is not None:
            clauses += [f"{p}ts_ms < {int(self.until)}", f"{p}day <= {quote(day(self.until))}"]
        if self.config_hash:
            clauses.append(f"{p}config_hash = {quote(self.config_hash)}")
        wanted = role or (None if self.role == "all" else self.role)
        if wanted:
            clauses.append(f"{p}role = {quote(wanted)}")
        clauses += [condition.format(p=p) for condition in self.extra]
        return " AND ".join(clauses)


def day(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))


def prepare_labels(engine: Engine) -> None:
    """The relation ``labels``: the first label of each prediction (by its time), computed once for
    every query that joins it; empty without a feedback table."""
    if not engine.tables.get("feedback"):
        engine.prepare("labels", "SELECT CAST(NULL AS VARCHAR) AS request_id, CAST(NULL AS BIGINT) AS row_index, "
                       "CAST(NULL AS DOUBLE) AS correct, CAST(NULL AS VARCHAR) AS true_label, "
                       "CAST(NULL AS DOUBLE) AS reward WHERE 1 = 0")
        return
    engine.prepare("labels", "SELECT request_id, row_index, correct, true_label, reward FROM (SELECT request_id, "
                   "row_index, CAST(correct AS DOUBLE) AS correct, true_label, CAST(reward AS DOUBLE) AS reward, "
                   "ROW_NUMBER() OVER (PARTITION BY request_id, row_index ORDER BY ts_ms) AS k FROM feedback) "
                   "AS ranked WHERE k = 1")


# A label judged where it arrived has ``correct``; one another replica received is judged here, by
# the one rule (gateway/domain/label_rule.py): the label's text equals the prediction's.
RIGHT = ("COALESCE(l.correct, CASE WHEN JSON_EXTRACT_STRING(l.true_label, '$') = p.prediction THEN 1.0 "
          "ELSE 0.0 END)")


def judged_sql(f: Filters) -> str:
    """Each labelled primary row the filters select, judged by the label rule: its version, user, time
    and whether it was right. The one join of the predictions with their labels (a hundred million
    rows probe the labels once); accuracy, the per-user sums and the slices all read it."""
    return (f"SELECT p.model_version, p.\"user\", p.ts_ms, {RIGHT} AS right_ FROM labels AS l JOIN predictions AS p "
            f"ON p.request_id = l.request_id AND p.row_index = l.row_index WHERE {f.sql('p', 'primary')}")


def prepare_judged(engine: Engine, f: Filters) -> Filters:
    """The relation ``judged`` for ``f``, computed once (needs ``labels``); returns ``f`` naming it."""
    engine.prepare("judged", judged_sql(f))
    return Filters(f.since, f.until, f.config_hash, f.role, f.extra, judged="judged")


def judged_rows(f: Filters) -> str:
    """What to read the judged rows from: the prepared relation, or the join itself (a narrowed filter)."""
    return f.judged or f"({judged_sql(f)})"


def versions(engine: Engine, f: Filters) -> pd.DataFrame:
    """Per role and version: counts, means, and the latency and request-time quantiles (p50, p95,
    p99), the quantiles from each value's count (the gateway logs both to the microsecond): an
    engine's exact quantile keeps every value of a group, gigabytes at 100 million rows."""
    out = engine.frame(f"""
        SELECT role, model_version, COUNT(*) AS n, MIN(kind) AS kind_min, MAX(kind) AS kind_max,
               AVG(inference_time_ms) AS mean, COUNT(request_time_ms) AS rt_n, AVG(request_time_ms) AS rt_mean,
               AVG(batch_rows) AS batch_rows_mean, MAX(ts_ms) AS last_ts
        FROM predictions WHERE {f.sql()} GROUP BY role, model_version""")
    for column, prefix in (("inference_time_ms", ""), ("request_time_ms", "rt_")):
        counts = engine.frame(f"SELECT role, model_version, ROUND({column}, 3) AS x, COUNT(*) AS n FROM predictions "
                              f"WHERE {f.sql()} AND {column} IS NOT NULL GROUP BY 1, 2, 3")
        found = {key: st.quantiles_counts(g["x"].to_numpy(), g["n"].to_numpy(), QUANTILES)
                 for key, g in counts.groupby(["role", "model_version"])}
        for i, name in enumerate(("p50", "p95", "p99")):
            out[prefix + name] = [found[(r, v)][i] if (r, v) in found else math.nan
                                  for r, v in zip(out["role"], out["model_version"], strict=True)]
    return out


def classes(engine: Engine, f: Filters) -> pd.DataFrame:
    return engine.frame(f"SELECT role, model_version, prediction, COUNT(*) AS n FROM predictions "
                        f"WHERE {f.sql()} GROUP BY role, model_version, prediction")


def accuracy(engine: Engine, f: Filters) -> pd.DataFrame:
    return engine.frame(f"SELECT model_version, COUNT(*) AS labelled, SUM(right_) AS right_ FROM {judged_rows(f)} AS j "
                        "GROUP BY model_version")


def latency_counts(engine: Engine, f: Filters) -> pd.DataFrame:
    return engine.frame(f"SELECT model_version, {LATENCY} AS x, COUNT(*) AS n FROM predictions "
                        f"WHERE {f.sql(role='primary')} GROUP BY model_version, {LATENCY}")


def sample(engine: Engine, f: Filters, counts: dict[tuple[str, str], int], seed: int) -> pd.DataFrame:
    """About ``SAMPLE_ROWS`` rows per (role, version), chosen by a hash of the row's key and the seed."""
    cases = " ".join(f"WHEN role = {quote(r)} AND model_version = {quote(v)} THEN "
                     f"{int(min(1.0, 1.25 * SAMPLE_ROWS / max(n, 1)) * SAMPLE_MODULUS)}"
                     for (r, v), n in counts.items())
    return engine.frame(f"""
        SELECT role, model_version, inference_time_ms AS latency_ms, request_time_ms, prediction, ts_ms
        FROM predictions
        WHERE {f.sql()}
          AND ABS(HASH(request_id, row_index, {int(seed)})) % {SAMPLE_MODULUS} < CASE {cases} ELSE 0 END""")


def randomised(f: Filters, extra: str = "") -> str:
    routings = ", ".join(quote(r) for r in sorted(RANDOMISED))
    return f"{f.sql(role='primary')} AND routing IN ({routings}) AND row_index = 0{extra}"


def prepare_sticky_users(engine: Engine, f: Filters) -> None:
    """The relation ``sticky_users``: each sticky user's randomised requests per configuration and
    weights, with the version of their first request; computed once for the unit of analysis and
    both sample-ratio tests (grouping a million users' text keys is a scan's dearest part)."""
    where = randomised(f, " AND routing = 'sticky' AND \"user\" IS NOT NULL")
    engine.prepare("sticky_users", f"""
        SELECT config_hash, weights, "user", ARG_MIN(model_version, ts_ms) AS v, MIN(ts_ms) AS first_ts,
               MAX(ts_ms) AS last_ts
        FROM predictions WHERE {where} GROUP BY config_hash, weights, "user"
        """)


def unit(engine: Engine, f: Filters) -> dict[str, Any]:
    """The unit of analysis (analyse.unit_of_analysis's rule); needs ``sticky_users``."""
    row = engine.frame(f"""
        SELECT COUNT(*) AS randomised, SUM(CASE WHEN routing = 'sticky' AND "user" IS NOT NULL THEN 1 ELSE 0 END)
               AS sticky FROM predictions WHERE {randomised(f)}""").iloc[0]
    users = int(engine.frame('SELECT COUNT(DISTINCT "user") AS users FROM sticky_users')["users"].iloc[0] or 0)
    n_randomised, sticky = int(row["randomised"]), int(row["sticky"] or 0)
    if n_randomised and sticky * 2 >= n_randomised:
        return {"unit": "user", "users": users, "requests": sticky,
                "why": f"{sticky} of {n_randomised} randomised requests were routed by a sticky user key, "
                       f"{users} users: SRM counts users, per-request metrics are clustered by user"}
    return {"unit": "request", "why": "requests were routed independently (weighted)"}


def srm(engine: Engine, f: Filters, by_user: bool) -> pd.DataFrame:
    if by_user:  # each sticky user once per configuration, with the version of their first request
        return engine.frame("""
            SELECT config_hash, weights, v AS model_version, COUNT(*) AS n, MAX(last_ts) AS last_ts
            FROM sticky_users WHERE weights <> '' GROUP BY config_hash, weights, v""")
    return engine.frame(f"""
        SELECT config_hash, weights, model_version, COUNT(*) AS n, MAX(ts_ms) AS last_ts FROM predictions
        WHERE {randomised(f, " AND weights <> ''")} GROUP BY config_hash, weights, model_version""")


def exposure(engine: Engine, f: Filters, per_users: pd.DataFrame | None = None) -> dict[str, Any] | None:
    """Sticky users answered by more than one version; from ``per_user``'s frame when the report has it
    (one row per version and user: the same rows this query groups)."""
    if per_users is not None:
        versions_per_user = per_users.groupby("user").size()
        users, mixed = len(versions_per_user), int((versions_per_user > 1).sum())
    else:
        row = engine.frame(f"""
            SELECT COUNT(*) AS users, SUM(CASE WHEN nv > 1 THEN 1 ELSE 0 END) AS mixed FROM (
                SELECT "user", COUNT(DISTINCT model_version) AS nv FROM predictions
                WHERE {f.sql(role='primary')} AND "user" IS NOT NULL GROUP BY "user") AS per_user""").iloc[0]
        users = int(row["users"] or 0)
        mixed = int(row["mixed"]) if users else 0  # SUM over no rows is NULL
    if users == 0:
        return None
    return {"users": users, "in_more_than_one_version": mixed, "share": mixed / users,
            "warn_above": MULTIPLE_EXPOSURE_WARN}


def per_user(engine: Engine, f: Filters, labels: list[str]) -> pd.DataFrame:
    """Per version and sticky user: requests, latency and class sums from the predictions alone, and
    labels and right ones from the judged rows; the two grouped apart and joined on their million keys,
    not a hundred million rows joined before grouping."""
    classes = "".join(f", SUM(CASE WHEN prediction = {quote(lbl)} THEN 1.0 ELSE 0.0 END) AS class_{i}"
                      for i, lbl in enumerate(labels))
    return engine.frame(f"""
        SELECT u.*, COALESCE(j.labelled, 0.0) AS labelled, COALESCE(j.right_, 0.0) AS right_
        FROM (SELECT model_version, "user", COUNT(*) AS n, SUM(inference_time_ms) AS latency{classes}
              FROM predictions WHERE {f.sql(role='primary')} AND "user" IS NOT NULL
              GROUP BY model_version, "user") AS u
        LEFT JOIN (SELECT model_version, "user", CAST(COUNT(*) AS DOUBLE) AS labelled, SUM(right_) AS right_
                   FROM {judged_rows(f)} AS jr WHERE "user" IS NOT NULL GROUP BY model_version, "user") AS j
          ON u.model_version = j.model_version AND u."user" = j."user\"""")


def shadow_pairs(engine: Engine, f: Filters) -> pd.DataFrame:
    return engine.frame(f"""
        SELECT p.model_version AS version_p, s.model_version AS version_s, p.prediction AS prediction_p,
               s.prediction AS prediction_s,
               {judged('p')} AS right_p, {judged('s')} AS right_s,
               COUNT(*) AS n
        FROM predictions AS p JOIN predictions AS s ON p.request_id = s.request_id AND p.row_index = s.row_index
        LEFT JOIN labels AS l ON p.request_id = l.request_id AND p.row_index = l.row_index
        WHERE {f.sql('p', 'primary')} AND {f.sql('s', 'shadow')}
        GROUP BY 1, 2, 3, 4, 5, 6""")


def judged(alias: str) -> str:
    """1 when the prediction under ``alias`` is right by the label rule, 0 when wrong, NULL unlabelled."""
    return (f"CASE WHEN l.request_id IS NULL THEN NULL WHEN JSON_EXTRACT_STRING(l.true_label, '$') = "
            f"{alias}.prediction THEN 1 ELSE 0 END")


def paired_latency_sample(engine: Engine, f: Filters, pairs: int, seed: int) -> pd.DataFrame:
    keep = int(min(1.0, PAIRED_SAMPLE / max(pairs, 1)) * SAMPLE_MODULUS)
    return engine.frame(f"""
        SELECT p.inference_time_ms AS latency_p, s.inference_time_ms AS latency_s
        FROM predictions AS p JOIN predictions AS s ON p.request_id = s.request_id AND p.row_index = s.row_index
        WHERE {f.sql('p', 'primary')} AND {f.sql('s', 'shadow')}
          AND ABS(HASH(p.request_id, p.row_index, {int(seed)})) % {SAMPLE_MODULUS} < {keep}""")


def srm_units(f: Filters, config_hash: str, by_user: bool) -> str:
    """The randomised units of one configuration as (ts_ms, model_version): its requests, or each
    sticky user once, at their first request (from ``sticky_users``)."""
    if by_user:
        return ("SELECT MIN(first_ts) AS ts_ms, ARG_MIN(v, first_ts) AS model_version FROM sticky_users "
                f"WHERE weights <> '' AND config_hash = {quote(config_hash)} GROUP BY \"user\"")
    where = randomised(f, " AND weights <> ''") + f" AND config_hash = {quote(config_hash)}"
    return f"SELECT ts_ms, model_version FROM predictions WHERE {where}"
