"""A prediction record as a spool row and back: one codec, its columns the record's own fields."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import orjson

from gateway.domain.records import RECORD_FIELDS, PredictionRecord

COLUMNS = ", ".join(RECORD_FIELDS)
INSERT = f"INSERT INTO predictions ({COLUMNS}) VALUES ({', '.join('?' * len(RECORD_FIELDS))})"
_JSON = {"features", "prediction"}  # stored as JSON text: an object, and a label or a number


_FIELDS = attrgetter(*RECORD_FIELDS)
_JSON_AT = tuple(i for i, name in enumerate(RECORD_FIELDS) if name in _JSON)


def values(record: PredictionRecord) -> list[Any]:
    """The record's columns in ``RECORD_FIELDS`` order, as ``INSERT`` binds them."""
    out = list(_FIELDS(record))
    for i in _JSON_AT:
        out[i] = orjson.dumps(out[i]).decode()
    return out


def record(row: Sequence[Any]) -> PredictionRecord:
    fields = {name: orjson.loads(v) if name in _JSON else v for name, v in zip(RECORD_FIELDS, row, strict=True)}
    return PredictionRecord(**fields)


@dataclass(frozen=True, slots=True)
class SpoolRow:
    """A record as the exporter sees it: with its row id, attempt count and any known run id."""

    id: int
    record: PredictionRecord
    attempts: int
    batch_id: str | None
    run_id: str | None


LEASED = f"id, attempts, batch_id, run_id, {COLUMNS}"  # what a claim returns, in this order


def leased_rows(cursor: Iterable[Sequence[Any]]) -> list[SpoolRow]:
    out = [SpoolRow(id=int(row[0]), attempts=int(row[1]), batch_id=row[2], run_id=row[3], record=record(row[4:]))
           for row in cursor]
    out.sort(key=lambda r: r.id)
    return out
