"""The guardrails at one look, one pure function each: its estimate, always-valid interval and
p-value, and whether it is breached or cleared. The rollout's verdict is the worst of them; the
running minima come back as a new mapping, never changed in place.

A guardrail is breached only when the sequential test says the candidate is worse than its threshold
(the whole interval beyond it), so looking every second does not inflate false rollbacks. The p-value
shown is the always-valid one: the smallest per-look value so far, counting only looks at which the
candidate was on the worse side of the threshold.

A guardrail is cleared when its always-valid interval lies wholly on the safe side of the threshold:
evidence of safety (non-inferiority), where "not breached" is only the absence of evidence of harm.
A guardrail with ``require = "cleared"`` holds its step until it is cleared (see the controller).
The sample-ratio guardrail's breach says the counts are suspect, not that the candidate is worse.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any

from gateway.rollout.counts import ArmCounts, RolloutCounts
from gateway.rollout.spec import Require, RolloutSpec
from gateway.stats import sequential as sq

ERROR_RATE, LATENCY, DISAGREEMENT, ACCURACY, SRM = "error_rate", "latency_p95", "disagreement", "accuracy", "srm"


class Verdict(IntEnum):
    """One guardrail's standing, and the rollout's (the worst of its guardrails'): higher is worse."""

    PASSING = 0  # not breached, and cleared where clearing is required
    UNCLEARED = 1  # not breached, but ``require = "cleared"`` and not cleared yet: the step waits
    SUSPECT = 2  # the split does not match the weights: the counts cannot be trusted
    BREACHED = 3  # the candidate is worse than the threshold


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

    @property
    def verdict(self) -> Verdict:
        if not self.enabled:
            return Verdict.PASSING
        if self.breached:
            return Verdict.SUSPECT if self.name == SRM else Verdict.BREACHED
        return Verdict.UNCLEARED if self.require == Require.CLEARED and not self.cleared else Verdict.PASSING

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Look:
    """What every guardrail reads at one look: the spec, the two arms' summed counts, and the step
    (its weights tag and the candidate's weight in force)."""

    spec: RolloutSpec
    counts: RolloutCounts
    weights_tag: str
    weight: float

    @property
    def control(self) -> ArmCounts:
        return self.counts.arms.get(self.spec.control, ArmCounts())

    @property
    def candidate(self) -> ArmCounts:
        return self.counts.arms.get(self.spec.candidate, ArmCounts())

    @property
    def users(self) -> dict[str, int]:
        """Sticky users per arm at this step's weights (empty under weighted routing)."""
        return self.counts.user_steps.get(self.weights_tag, {})

    @property
    def by_user(self) -> bool:
        """Sticky routing: the user is the unit. Each arm's counts per unit bucket give the clustered
        variance (the request is the unit otherwise, and the buckets then agree with the binomial one)."""
        return self.users.get(self.spec.control, 0) + self.users.get(self.spec.candidate, 0) > 0

    @property
    def unit(self) -> str:
        return "user" if self.by_user else "request"


@dataclass(frozen=True)
class Reading:
    """One guardrail's statistics at a look, before the running minimum is applied."""

    name: str
    enabled: bool
    threshold: float
    meaning: str
    estimate: sq.SequentialEstimate
    worse: bool  # the estimate is on the worse side of the threshold
    n: dict[str, int]
    safe: bool  # the interval lies wholly on the safe side
    unit: str
    require: str = "not_breached"
    key: str | None = None  # where its running minimum is kept (default: its name)
    breach_alpha: float | None = None  # default: the spec's alpha


@dataclass(frozen=True)
class Evaluation:
    results: dict[str, GuardrailResult]
    minima: dict[str, float]  # the running minima after this look

    @property
    def verdict(self) -> Verdict:
        return max((r.verdict for r in self.results.values()), default=Verdict.PASSING)

    def named(self, verdict: Verdict) -> list[str]:
        return [name for name, r in self.results.items() if r.verdict is verdict]


def _num(x: float) -> float | None:
    return round(float(x), 6) if x is not None and math.isfinite(float(x)) else None


def _below(est: sq.SequentialEstimate, t: float) -> bool:  # the whole interval under the threshold
    return math.isfinite(est.high) and est.high < t


def error_rate(look: Look) -> Reading:
    """Candidate minus control error rate, breached when significantly above ``max_increase``."""
    g, c, x, spec = look.spec.guardrails.error_rate, look.control, look.candidate, look.spec
    n_c, n_x, t = c.requests + c.errors, x.requests + x.errors, g.max_increase
    est = sq.clustered_proportion_difference(c.errors, n_c, x.errors, n_x, _answered(c), _answered(x), null=t,
                                             alpha=spec.alpha, n_star=spec.tuning_samples)
    both = n_c > 0 and n_x > 0
    return Reading(ERROR_RATE, g.enabled, t, "candidate error rate minus control's; breached above threshold", est,
                   both and est.estimate > t, {"control": n_c, "candidate": n_x}, both and _below(est, t), look.unit,
                   g.require)


def latency_p95(look: Look) -> Reading:
    """Candidate over control p95 request time, breached when significantly above ``max_ratio``."""
    g, c, x, spec = look.spec.guardrails.latency_p95, look.control, look.candidate, look.spec
    t = g.max_ratio
    est = sq.histogram_quantile_ratio({int(k): v for k, v in c.latency_ms.items()},
                                      {int(k): v for k, v in x.latency_ms.items()}, null=t, alpha=spec.alpha,
                                      n_star=spec.tuning_samples,
                                      design_effects=(_time_design_effect(c), _time_design_effect(x)))
    return Reading(LATENCY, g.enabled, t, "candidate p95 request time over control's; breached above threshold",
                   est, math.isfinite(est.estimate) and est.estimate > t,
                   {"control": c.requests, "candidate": x.requests}, _below(est, t), look.unit, g.require)


def disagreement(look: Look) -> Reading:
    """The candidate's (shadow) disagreement with the control on the control's requests."""
    g, spec, pairs = look.spec.guardrails.disagreement, look.spec, look.counts.shadow.pairs
    t = g.max_rate
    est = sq.proportion(look.counts.shadow.disagree, pairs, null=t, alpha=spec.alpha, n_star=spec.tuning_samples)
    return Reading(DISAGREEMENT, g.enabled, t, "share of shadow-scored rows where the candidate answers "
                   "differently from the control; breached above threshold", est, pairs > 0 and est.estimate > t,
                   {"pairs": pairs}, pairs > 0 and _below(est, t), "row", g.require)


def accuracy(look: Look) -> Reading:
    """Candidate minus control accuracy (from /feedback), breached when significantly below -``max_drop``."""
    g, c, x, spec = look.spec.guardrails.accuracy, look.control, look.candidate, look.spec
    t, l_c, l_x = g.max_drop, c.labelled, x.labelled
    est = sq.clustered_proportion_difference(c.correct, l_c, x.correct, l_x,
                                             (c.per_bucket("correct"), c.per_bucket("labelled")),
                                             (x.per_bucket("correct"), x.per_bucket("labelled")), null=-t,
                                             alpha=spec.alpha, n_star=spec.tuning_samples)
    both = l_c > 0 and l_x > 0
    return Reading(ACCURACY, g.enabled, t, "candidate accuracy minus control's (from /feedback); breached "
                   "below minus threshold", est, both and est.estimate < -t, {"control": l_c, "candidate": l_x},
                   both and math.isfinite(est.low) and est.low > -t, look.unit, g.require)


def sample_ratio(look: Look) -> Reading:
    """The candidate's share within this step against the weight in force: in users when requests were
    routed by a sticky key (each user's requests all go one way, so they are not independent draws;
    weighted requests of the step, if any, are then left to the other guardrails)."""
    g, spec, w = look.spec.guardrails.srm, look.spec, look.weight
    split = look.counts.steps.get(look.weights_tag, {})
    requests = [split.get(spec.control, 0), split.get(spec.candidate, 0)]
    users = look.users
    observed = [users.get(spec.control, 0), users.get(spec.candidate, 0)] if look.by_user else requests
    total = sum(observed)
    p = float(sq.srm_p_value(observed, [1.0 - w, w])) if w < 1.0 and total else 1.0
    est = sq.SequentialEstimate(observed[1] / total if total else math.nan, math.nan, math.nan, p, w)
    unit = "sticky users" if look.by_user else "requests"
    return Reading(SRM, g.enabled, g.alpha, f"candidate's share of this step's {unit} against its weight {w:g}; "
                   "breached when the always-valid p-value is below the threshold", est, total > 0,
                   {"control": observed[0], "candidate": observed[1]}, True, look.unit,
                   key=f"{SRM}@{look.weights_tag}", breach_alpha=g.alpha)


GUARDRAILS: tuple[Callable[[Look], Reading], ...] = (error_rate, latency_p95, disagreement, accuracy, sample_ratio)


def judge(reading: Reading, alpha: float, minimum: float) -> tuple[GuardrailResult, float | None]:
    """The reading against its running minimum p-value: (the result, the new minimum, or None when this
    look does not count: disabled, or the candidate on the safe side)."""
    est = reading.estimate
    p, counted = minimum, None
    if reading.enabled and reading.worse and math.isfinite(est.p_value):
        p = counted = min(p, float(est.p_value))
    breached = reading.enabled and reading.worse and p <= (reading.breach_alpha or alpha)
    result = GuardrailResult(reading.name, reading.enabled, reading.threshold, reading.meaning, _num(est.estimate),
                             [_num(est.low), _num(est.high)], round(p, 6), breached, reading.n, reading.require,
                             reading.enabled and not breached and reading.safe, reading.unit)
    return result, counted


def evaluate(spec: RolloutSpec, counts: RolloutCounts, weights_tag: str, weight: float,
             minima: Mapping[str, float]) -> Evaluation:
    """Every guardrail (disabled ones too, marked so), at the candidate's ``weight`` in force, whose
    requests were routed under ``weights_tag``, with the running minima of earlier looks (the SRM's is
    kept per weights)."""
    look = Look(spec, counts, weights_tag, weight)
    results: dict[str, GuardrailResult] = {}
    after = dict(minima)
    for guardrail in GUARDRAILS:
        reading = guardrail(look)
        key = reading.key or reading.name
        result, minimum = judge(reading, spec.alpha, after.get(key, 1.0))
        if minimum is not None:
            after[key] = minimum
        results[reading.name] = result
    return Evaluation(results, after)


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
