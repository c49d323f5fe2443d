"""Ground truth for answered predictions: checked against the prediction, stored durably in the spool.

Who may label is decided before this (gateway/security/gate.py): a label pipeline with the feedback
token, or the client that got the answer with its receipt. A label with neither is refused, or, with
``[feedback] untrusted = "record"``, kept apart and never used (answered the same whether or not the
request exists, so that nobody learns of other people's predictions from it).

The first label of a prediction wins: the same label (and reward) again is a retry (202,
``replayed``), and a different one is refused (409, naming what is stored). A classifier's true label
must be one of its classes (an int maps through ``class_names``); the exporter joins it as
``correct``. A regressor's true value is a number; the exporter logs its absolute error. A label
counts for the bandit and the accuracy guardrail only if it is the first its unit (the sticky user,
else the request) gave that version (``counted``).

Replicas sharing state (``[state] backend = "mlflow"``) behind a load balancer: a label may reach a
replica that did not answer the prediction. It is checked against the model's classes (every replica
serves the same variants), stored here, and the exporter joins it to its prediction in MLflow, where
it also works out whether the prediction was right (202, ``"joined": "in MLflow"``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from gateway.domain.errors import ConflictingLabel, InvalidFeedback, SpoolUnavailable, UnknownRequest
from gateway.domain.label_rule import absolute_error, is_correct
from gateway.domain.messages import shown
from gateway.domain.records import Role, randomisation_unit
from gateway.security.spec import Trust
from gateway.serving.observers import Observers
from gateway.serving.outcome import ServiceCounters
from gateway.serving.pipeline import Scorer
from gateway.spool.label_table import LabelExists
from gateway.spool.sqlite import SpoolWriteError
from gateway.variants.output import ModelKind


class FeedbackRecorder:
    def __init__(self, scorer: Scorer, counts: ServiceCounters, observers: Observers,
                 accept_remote: bool = False) -> None:
        self.scorer = scorer
        self.variants = scorer.variants
        self.spool = scorer.writer.spool if scorer.writer is not None else None
        self.counts = counts
        self.observers = observers
        self.accept_remote = accept_remote  # replicas: a label for another replica's prediction is kept
        self.bandit = scorer.settings.bandit
        self.reveal_version = scorer.settings.routing.reveal_version

    def record(self, request_id: str, true_label: str | int | float, row_index: int = 0,
               reward: float | None = None, trust: Trust = Trust.TOKEN, client: str = "") -> dict[str, Any]:
        spool = self.spool
        if spool is None:
            raise SpoolUnavailable("feedback needs the prediction spool, which is disabled or could not be opened")
        if reward is not None and not self.bandit.reward_in_range(reward):
            low, high = self.bandit.reward_range
            message = f"reward must lie in [{low:g}, {high:g}] ([bandit] reward_range), got {shown(reward)}"
            raise InvalidFeedback(message, errors=[{"field": "reward", "message": message}])
        if trust is Trust.UNTRUSTED:
            return self._record_untrusted(spool, request_id, true_label, row_index, reward, client)
        predicted = spool.find(request_id, Role.PRIMARY, row_index)
        deadline = time.monotonic() + 2.0
        while predicted is None and time.monotonic() < deadline:
            # Its prediction may be being answered right now: it lands in a moment. Read once more after
            # it stops being in flight, since it may have landed between the last read and that check.
            in_flight = self.scorer.in_flight(request_id)
            predicted = spool.find(request_id, Role.PRIMARY, row_index)
            if predicted is not None or not in_flight:
                break
            time.sleep(0.01)
        if predicted is None and self.accept_remote:
            return self._record_remote(spool, request_id, true_label, row_index, reward, trust)
        if predicted is None:
            raise UnknownRequest(f"no answered prediction with request_id {request_id!r} and row {row_index} in "
                                 f"the spool (unknown, or older than the spool's retention)", request_id=request_id)
        correct: bool | None = None
        abs_error: float | None = None
        if predicted.kind == ModelKind.REGRESSOR:
            value = _number(true_label)
            abs_error = absolute_error(predicted.prediction, value)
            label: str | int | float = value
        else:
            label = self._class_label(true_label)
            correct = is_correct(predicted.prediction, label)
        unit = randomisation_unit(predicted.routing, predicted.user, predicted.request_id)
        counted: list[bool] = []
        replayed = _stored(lambda: counted.append(spool.labels.append(
            predicted, label, correct, abs_error, reward, trust=trust.value, unit=unit)), request_id, row_index,
            label, reward)
        self.counts.add("feedback_replayed" if replayed else "feedback")
        if counted and counted[0]:
            self.observers.feedback(predicted.model_version, predicted.routing, correct, predicted.ts_ms, unit)
        elif not replayed:
            self.counts.add("feedback_not_counted")  # its unit gave this version a label already
        out: dict[str, Any] = {"request_id": request_id, "row_index": row_index, "true_label": label,
                               "prediction": predicted.prediction, "replayed": replayed, "trust": trust.value}
        if not replayed:
            out["counted"] = counted[0]
        if self.reveal_version:
            out["model_version"] = predicted.model_version
        if correct is not None:
            out["correct"] = correct
        if abs_error is not None:
            out["abs_error"] = abs_error
        if reward is not None:
            out["reward"] = reward
        return out

    def _record_remote(self, spool: Any, request_id: str, true_label: str | int | float,
                       row_index: int, reward: float | None, trust: Trust) -> dict[str, Any]:
        label = self._label(true_label)
        replayed = _stored(lambda: spool.labels.append_remote(request_id, row_index, label, reward, trust=trust.value),
                           request_id, row_index, label, reward)
        self.counts.add("feedback_replayed" if replayed else "feedback_remote")
        return {"request_id": request_id, "row_index": row_index, "true_label": label, "replayed": replayed,
                "trust": trust.value, "joined": "in MLflow"}

    def _record_untrusted(self, spool: Any, request_id: str, true_label: str | int | float, row_index: int,
                          reward: float | None, client: str) -> dict[str, Any]:
        """Kept apart, never used. The answer is the same whether the request exists or not."""
        label = self._label(true_label)
        try:
            spool.labels.append_untrusted(request_id, row_index, label, reward, client)
        except SpoolWriteError as exc:
            raise SpoolUnavailable(f"feedback not stored: {exc}") from None
        self.counts.add("feedback_untrusted")
        return {"request_id": request_id, "row_index": row_index, "true_label": label, "trust": Trust.UNTRUSTED.value,
                "recorded": True, "used_for_decisions": False}

    def _label(self, given: str | int | float) -> str | int | float:
        return _number(given) if self.variants.kind == ModelKind.REGRESSOR else self._class_label(given)

    def _class_label(self, given: str | int | float) -> str | int:
        labels = self.variants.labels
        if labels is None:
            if isinstance(given, float):
                raise _invalid(f"true_label must be a class label, got {shown(given)}")
            return given
        if isinstance(given, int) and not isinstance(given, bool):
            if given in labels:
                return given
            if 0 <= given < len(labels):
                return labels[given]
        if isinstance(given, str):
            for name in labels:
                if given.strip().lower() == str(name).lower():
                    return name
        raise _invalid(f"true_label must be one of {labels} or 0-{len(labels) - 1}, got {shown(given)}")


def _stored(append: Callable[[], object], request_id: str, row_index: int, label: str | int | float,
            reward: float | None) -> bool:
    """Store a label; True if the same label and reward were already there (a retry). The first label
    stands: another one, or the same with another reward, is refused (409) naming what is stored."""
    try:
        append()
    except LabelExists as exc:
        if exc.existing != label or exc.reward != reward:
            stored = f"the true label {shown(exc.existing)}" + (f" with reward {exc.reward!r}"
                                                              if exc.reward is not None else " without a reward")
            raise ConflictingLabel(f"prediction {request_id!r} row {row_index} already has {stored}; the first "
                                   "label stands", true_label=exc.existing, reward=exc.reward,
                                   request_id=request_id) from None
        return True
    except SpoolWriteError as exc:
        raise SpoolUnavailable(f"feedback not stored: {exc}") from None
    return False


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _invalid(f"true_label of a regressor must be a number, got {shown(value)}") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise _invalid(f"true_label of a regressor must be a finite number, got {shown(value)}")
    return number


def _invalid(message: str) -> InvalidFeedback:
    return InvalidFeedback(message, errors=[{"field": "true_label", "message": message}])
