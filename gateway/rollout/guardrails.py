"""The guardrails at one look: each one's estimate, always-valid interval and p-value, and whether it
is breached. Pure functions of the summed live counts and the running minima carried between looks.

A guardrail is breached only when the sequential test says the candidate is worse than its threshold
(the whole interval beyond it), so looking every second does not inflate false rollbacks. The p-value
shown is the always-valid one: the smallest per-look value so far, counting only looks at which the
candidate was on the worse side of the threshold.

A guardrail is cleared when its always-valid interval lies wholly on the safe side of the threshold:
evidence of safety (non-inferiority), where "not breached" is only the absence of evidence of harm.
A guardrail with ``require = "cleared"`` holds its step until it is cleared (see the controller).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from gateway.rollout.counts import ArmCounts, RolloutCounts
from gateway.rollout.spec import RolloutSpec
from gateway.stats import sequential as sq

ERROR_RATE, LATENCY, DISAGREEMENT, ACCURACY, SRM = "error_rate", "latency_p95", "disagreement", "accuracy", "srm"


@dataclass(frozen=True)
class GuardrailResult:
    name: str
    enabled: bool
    threshold: float
    meaning: str
    estimate: float | None
    interval: list[float | None]
    p_value: float
    breached: bool
    n: dict[str, int]
    require: str = "not_breached"
    cleared: bool = False
    unit: str = "request"  # the independent draw the interval assumes: "user" under sticky routing

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _num(x: float) -> float | None:
    return round(float(x), 6) if x is not None and math.isfinite(float(x)) else None


def evaluate(spec: RolloutSpec, counts: RolloutCounts, weights_tag: str, weight: float,
             minima: dict[str, float]) -> dict[str, GuardrailResult]:
    """Every guardrail (disabled ones too, marked so), at the candidate's ``weight`` in force, whose
    requests were routed under ``weights_tag``. ``minima`` maps guardrail keys to running minima; it
    is updated in place (the SRM's is kept per weights)."""
    g = spec.guardrails
    c, x = counts.arms.get(spec.control, ArmCounts()), counts.arms.get(spec.candidate, ArmCounts())
    alpha, n_star = spec.alpha, spec.tuning_samples
    out: dict[str, GuardrailResult] = {}

    # Sticky routing: the user is the unit. Each arm's counts per unit bucket give the clustered variance
    # (the request is the unit otherwise, and the buckets then agree with the binomial variance).
    users = counts.user_steps.get(weights_tag, {})
    by_user = users.get(spec.control, 0) + users.get(spec.candidate, 0) > 0
    unit = "user" if by_user else "request"

    def result(name: str, enabled: bool, threshold: float, meaning: str, est: sq.SequentialEstimate, worse: bool,
               n: dict[str, int], key: str | None = None, breach_alpha: float | None = None,
               require: str = "not_breached", safe: bool = False, unit: str = unit) -> None:
        key = key or name
        p = minima.get(key, 1.0)
        if enabled and worse and math.isfinite(est.p_value):
            p = min(p, float(est.p_value))
            minima[key] = p
        breached = enabled and worse and p <= (breach_alpha or alpha)
        out[name] = GuardrailResult(name, enabled, threshold, meaning, _num(est.estimate),
                                    [_num(est.low), _num(est.high)], round(p, 6), breached, n, require,
                                    enabled and not breached and safe, unit)

    def below(est: sq.SequentialEstimate, t: float) -> bool:  # the whole interval under the threshold
        return math.isfinite(est.high) and est.high < t

    # Error rate: candidate minus control, breached when it is significantly above max_increase.
    n_c = c.requests + c.errors
    n_x = x.requests + x.errors
    t = g.error_rate.max_increase
    est = sq.clustered_proportion_difference(c.errors, n_c, x.errors, n_x, _answered(c), _answered(x), null=t,
                                             alpha=alpha, n_star=n_star)
    result(ERROR_RATE, g.error_rate.enabled, t, "candidate error rate minus control's; breached above threshold",
           est, n_c > 0 and n_x > 0 and est.estimate > t, {"control": n_c, "candidate": n_x},
           require=g.error_rate.require, safe=n_c > 0 and n_x > 0 and below(est, t))

    # p95 request time: candidate over control.
    t = g.latency_p95.max_ratio
    hist_c = {int(k): v for k, v in c.latency_ms.items()}
    hist_x = {int(k): v for k, v in x.latency_ms.items()}
    est = sq.histogram_quantile_ratio(hist_c, hist_x, null=t, alpha=alpha, n_star=n_star,
                                      design_effects=(_time_design_effect(c), _time_design_effect(x)))
    result(LATENCY, g.latency_p95.enabled, t, "candidate p95 request time over control's; breached above threshold",
           est, math.isfinite(est.estimate) and est.estimate > t,
           {"control": c.requests, "candidate": x.requests}, require=g.latency_p95.require, safe=below(est, t))

    # Disagreement of the candidate (shadow) with the control on the control's requests.
    t = g.disagreement.max_rate
    pairs = counts.shadow.pairs
    est = sq.proportion(counts.shadow.disagree, pairs, null=t, alpha=alpha, n_star=n_star)
    result(DISAGREEMENT, g.disagreement.enabled, t, "share of shadow-scored rows where the candidate answers "
           "differently from the control; breached above threshold", est, pairs > 0 and est.estimate > t,
           {"pairs": pairs}, require=g.disagreement.require, safe=pairs > 0 and below(est, t), unit="row")

    # Accuracy from /feedback: candidate minus control, breached when significantly below -max_drop.
    t = g.accuracy.max_drop
    l_c, l_x = c.labelled, x.labelled
    est = sq.clustered_proportion_difference(c.correct, l_c, x.correct, l_x,
                                             (c.per_bucket("correct"), c.per_bucket("labelled")),
                                             (x.per_bucket("correct"), x.per_bucket("labelled")), null=-t, alpha=alpha,
                                             n_star=n_star)
    result(ACCURACY, g.accuracy.enabled, t, "candidate accuracy minus control's (from /feedback); breached "
           "below minus threshold", est, l_c > 0 and l_x > 0 and est.estimate < -t,
           {"control": l_c, "candidate": l_x}, require=g.accuracy.require,
           safe=l_c > 0 and l_x > 0 and math.isfinite(est.low) and est.low > -t)

    # Sample ratio within this step, against the weights in force: in users when requests were routed by a
    # sticky key (each user's requests all go one way, so they are not independent draws; weighted
    # requests of the step, if any, are then left to the other guardrails).
    w = weight
    split = counts.steps.get(weights_tag, {})
    requests = [split.get(spec.control, 0), split.get(spec.candidate, 0)]
    observed = [users.get(spec.control, 0), users.get(spec.candidate, 0)] if by_user else requests
    p = float(sq.srm_p_value(observed, [1.0 - w, w])) if w < 1.0 and sum(observed) else 1.0
    share = observed[1] / sum(observed) if sum(observed) else math.nan
    srm_est = sq.SequentialEstimate(share, math.nan, math.nan, p, w)
    unit = "sticky users" if by_user else "requests"
    result(SRM, g.srm.enabled, g.srm.alpha, f"candidate's share of this step's {unit} against its weight {w:g}; "
           "breached when the always-valid p-value is below the threshold", srm_est, sum(observed) > 0,
           {"control": observed[0], "candidate": observed[1]}, key=f"{SRM}@{weights_tag}", breach_alpha=g.srm.alpha,
           safe=True)
    return out



def _answered(arm: ArmCounts) -> tuple[list[int], list[int]]:
    """(model failures, answers and failures) per unit bucket."""
    errors = arm.per_bucket("errors")
    return errors, [r + e for r, e in zip(arm.per_bucket("requests"), errors, strict=True)]


def _time_design_effect(arm: ArmCounts, q: float = 0.95) -> float:
    """The design effect of the share of requests at or above the coarse time bin of the q-quantile,
    from the unit buckets: how much fewer independent draws the request times are worth (Woodruff's
    interval for a quantile under cluster sampling uses the variance of the distribution function there)."""
    fine = sorted((int(b), n) for b, n in arm.latency_ms.items() if n > 0)
    total = sum(n for _, n in fine)
    if total == 0:
        return 1.0
    seen, at = 0, fine[-1][0]
    for b, n in fine:
        seen += n
        if seen >= q * total:
            at = b
            break
    above, every = arm.times_per_bucket(at)
    return sq.design_effect(above, every)
