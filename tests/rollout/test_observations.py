"""The rollout's live counts: only randomised traffic of the two arms counts, splits are keyed by the
weights each request was routed under, and the workers' counts add up exactly."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.records import PredictionRecord
from gateway.rollout.counts import RolloutCounts, ShadowCounts
from gateway.rollout.observations import Following, RolloutObserver


def record(variant: str, routing: str = "weighted", role: str = "primary", weights: str = "c=0.9,x=0.1",
           ms: float = 2.0, prediction: str = "a") -> PredictionRecord:
    return PredictionRecord(request_id="r", role=role, model_version=variant, features={}, prediction=prediction,
                            class_index=None, inference_time_ms=ms, ts_ms=0, routing=routing, config_hash="h",
                            weights=weights, request_time_ms=ms)


def observer() -> RolloutObserver:
    o = RolloutObserver()
    o.follow(Following("r1", "c", "x", started_ms=5))
    return o


def test_only_randomised_requests_of_the_two_arms_count() -> None:
    o = observer()
    o.on_records([record("c")])
    o.on_records([record("x", routing="sticky")])
    o.on_records([record("x", routing="forced")])  # a forced request says nothing about the split
    o.on_records([record("other")])
    o.on_error("x", "weighted", "c=0.9,x=0.1", "request:r")
    o.on_error("x", "forced", "c=0.9,x=0.1", "request:r")
    o.on_feedback("x", "weighted", False, 10, "request:r")
    o.on_feedback("c", "weighted", True, 10, "request:r")
    o.on_feedback("c", "weighted", None, 10, "request:r")  # a regressor's feedback has no right or wrong
    rollout_id, counts = o.take_snapshot()  # type: ignore[misc]
    assert rollout_id == "r1"
    assert counts.arms["c"].requests == 1 and counts.arms["x"].requests == 1
    assert counts.arms["x"].errors == 1 and "other" not in counts.arms
    assert counts.steps == {"c=0.9,x=0.1": {"c": 1, "x": 2}}
    assert (counts.arms["x"].labelled, counts.arms["x"].correct) == (1, 0)
    assert (counts.arms["c"].labelled, counts.arms["c"].correct) == (1, 1)
    assert o.take_snapshot() is None  # nothing new since
    o.on_feedback("x", "weighted", True, 4, "request:r")  # on a prediction made before the rollout started
    assert o.take_snapshot() is None


def test_shadow_disagreement_and_a_new_rollout_starts_from_zero() -> None:
    o = observer()
    o.on_records([record("x", role="shadow", prediction="a"), record("x", role="shadow", prediction="b")],
                 primaries=["a", "a"])
    assert o.take_snapshot()[1].shadow == ShadowCounts(pairs=2, disagree=1)  # type: ignore[index]
    o.follow(Following("r2", "c", "x"))
    assert o.take_snapshot()[1].shadow == ShadowCounts(pairs=0, disagree=0)  # type: ignore[index]
    o.follow(None)
    o.on_records([record("c")])
    assert o.take_snapshot() is None


arms = st.sampled_from(["c", "x"])
events = st.lists(st.tuples(arms, st.sampled_from(["weighted", "sticky"]), st.floats(0.01, 500)), max_size=40)


@given(parts=st.lists(events, min_size=1, max_size=4))
def test_workers_counts_add_up_to_the_counts_of_all_the_traffic(parts: list[list[tuple[str, str, float]]]) -> None:
    one = observer()
    separate = []
    for part in parts:
        worker = observer()
        for variant, routing, ms in part:
            for o in (one, worker):
                o.on_records([record(variant, routing=routing, ms=ms)])
        snap = worker.take_snapshot()
        separate.append(snap[1] if snap else RolloutCounts())
    whole = one.take_snapshot()
    assert RolloutCounts.merged(separate) == (whole[1] if whole else RolloutCounts.merged([]))


def test_sticky_users_are_counted_once_per_step_and_survive_the_shared_state() -> None:
    from dataclasses import replace

    o = observer()
    for user, variant in [("u1", "c"), ("u1", "c"), ("u2", "x"), ("u1", "c"), ("u3", "c")]:
        o.on_records([replace(record(variant, routing="sticky"), user=user)])
    o.on_records([replace(record("c", routing="sticky", weights="c=0.5,x=0.5"), user="u1")])  # a new step
    o.on_records([record("c")])  # weighted, no user: counted as a request only
    _, counts = o.take_snapshot()  # type: ignore[misc]
    assert counts.user_steps == {"c=0.9,x=0.1": {"c": 2, "x": 1}, "c=0.5,x=0.5": {"c": 1}}
    assert counts.steps["c=0.9,x=0.1"] == {"c": 5, "x": 1}
    assert RolloutCounts.from_dict(counts.to_dict()) == counts  # as the shared state keeps them
    merged = RolloutCounts.merged([counts, counts])
    assert merged.user_steps["c=0.9,x=0.1"] == {"c": 4, "x": 2}  # another worker's users add up
