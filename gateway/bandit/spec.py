"""The ``[bandit]`` section: used when ``[routing] mode = "bandit"``."""

from __future__ import annotations

import math
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator


class RewardKind(StrEnum):
    BINARY = "binary"  # 0 or 1: Beta-Bernoulli
    CONTINUOUS = "continuous"  # any finite number: Normal (Student t) for the mean


class Reward(StrEnum):
    CORRECT = "correct"  # classifiers: 1 when /feedback's true label equals the prediction, else 0
    NEGATIVE_ABS_ERROR = "negative_abs_error"  # regressors: minus |true value - prediction|
    FEEDBACK = "feedback"  # the numeric ``reward`` field /feedback carries

    @property
    def kind(self) -> RewardKind:
        return RewardKind.BINARY if self is Reward.CORRECT else RewardKind.CONTINUOUS

    @property
    def model_kind(self) -> str | None:
        """The model kind the reward needs, if any."""
        return {Reward.CORRECT: "classifier", Reward.NEGATIVE_ABS_ERROR: "regressor"}.get(self)


class BanditSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reward: Reward = Reward.CORRECT
    update_seconds: float = Field(60.0, gt=0, le=86_400)  # how often the weights move
    burn_in: int = Field(100, ge=1)  # labelled predictions each arm needs before the weights move
    min_share: float = Field(0.01, ge=0, le=1)  # of traffic every arm keeps
    draws: int = Field(10_000, ge=100, le=1_000_000)  # posterior draws per reweighting
    # /feedback's numeric reward must lie in [low, high] (422 naming reward otherwise): one client's
    # reward of 1e308 would otherwise outweigh every other label. Set it to your reward's own range.
    reward_range: tuple[float, float] = (0.0, 1.0)

    @field_validator("reward_range")
    @classmethod
    def _range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            raise ValueError(f"must be [low, high], finite, with low < high; got [{low}, {high}]")
        if high - low > 1e12:
            raise ValueError(f"[{low}, {high}] is wider than 1e12: rewards that large overflow the posterior's "
                             "sums of squares; rescale them")
        return value

    def reward_in_range(self, reward: float) -> bool:
        return self.reward_range[0] <= reward <= self.reward_range[1]


def check_bandit(section: BanditSection, arms: list[str], model_kind: str | None) -> None:
    """Raise ValueError naming the key when the section cannot work with these arms and model kind
    (``model_kind`` None: not known yet, checked again once the models are loaded)."""
    if len(arms) < 2:
        raise ValueError("variants: a bandit needs at least two variants")
    if section.min_share * len(arms) > 1:
        raise ValueError(f"bandit.min_share: {section.min_share} times {len(arms)} variants is more than all of "
                         "the traffic")
    needs = section.reward.model_kind
    if model_kind is not None and model_kind != "auto" and needs is not None and model_kind != needs:
        raise ValueError(f"bandit.reward: {section.reward.value!r} needs a {needs}, the model is a {model_kind}")
