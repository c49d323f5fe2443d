"""A request's shared fields: one frozen type, in step with the record's fields."""

from __future__ import annotations

from dataclasses import MISSING, fields

import orjson
import pytest

from gateway.domain.records import SHARED_FIELDS, PredictionRecord, RecordBatch, SharedFields

BASE = {"request_id": "r-1", "role": "primary", "model_version": "v1.0", "inference_time_ms": 1.5, "ts_ms": 1000,
        "routing": "weighted", "config_hash": "abc"}


def test_the_shared_fields_are_the_records_fields_but_the_rows_own_in_order_with_the_same_defaults() -> None:
    assert tuple(f.name for f in fields(SharedFields)) == SHARED_FIELDS
    record = {f.name: f.default for f in fields(PredictionRecord)}
    for f in fields(SharedFields):
        assert f.default == record[f.name] or (f.default is MISSING and record[f.name] is MISSING), f.name


def test_an_older_entry_takes_the_defaults_and_a_newer_ones_unknown_keys_are_left_out() -> None:
    shared = SharedFields.of({**BASE, "a_field_of_a_later_release": 1})
    assert shared.weights_version == 0 and shared.assignment_probability is None
    assert orjson.loads(orjson.dumps(shared.as_dict())) == {**shared.as_dict()}
    with pytest.raises(AttributeError):
        shared.ts_ms = 5  # type: ignore[misc]


def test_a_batch_builds_each_record_from_the_shared_fields_and_its_row() -> None:
    batch = RecordBatch(BASE, [{"x": 1.0}, {"x": 2.0}], ["a", "b"], [0, 1], first_row=3)
    record = batch[1]
    assert record == PredictionRecord(**SharedFields.of(BASE).as_dict(), features={"x": 2.0}, prediction="b",
                                      class_index=1, row_index=4)
