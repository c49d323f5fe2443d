"""What one request may hold, checked by the wire formats before they build anything per row: at
most ``max_rows`` rows and at least one, and no more columns than the model's signature has. A body
of a million rows or a hundred thousand columns is refused from its counts, in milliseconds."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import ijson

from gateway.domain.errors import MalformedBody, TooManyColumns, TooManyRows

# A large body: decoded on a worker thread, not the event loop, and (JSON) counted while streaming
# before the full parse.
LARGE_BODY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class RequestShape:
    columns: tuple[str, ...]  # the signature's, in order
    max_rows: int

    def rows(self, n: int) -> None:
        if n > self.max_rows:
            raise TooManyRows(n, self.max_rows)
        if n <= 0:
            raise MalformedBody("the request has no rows to predict")

    def rows_past(self, counted: int, per_row: int = 1) -> None:
        """A streamed count (``per_row`` values a row) that stopped past the limit: more rows than allowed."""
        if counted > self.max_rows * per_row:
            raise TooManyRows(None, self.max_rows)

    def width(self, n: int, where: str) -> None:
        if n > len(self.columns):
            raise TooManyColumns(n, list(self.columns), where)


MAX_STREAM_DEPTH = 16  # deeper than any format's rows: the count stops, the full parse decides


def count_json_arrays(body: bytes, arrays: Iterable[str], budget: int) -> dict[str, int]:
    """How many items each array at the given paths (``a.b``, a ``*`` for any key) holds, read as a
    stream and stopped once any count passes ``budget`` (``path.item[]`` counts the items that are
    lists themselves): a body of half a million rows is counted from its first thousand, in
    milliseconds, not parsed whole. Malformed or deeply nested JSON stops the count (the full parse
    then says what is wrong)."""
    wanted = [tuple(a.split(".")) for a in arrays]
    counts: Counter[str] = Counter()
    path: list[str] = []  # keys and "item" from the top down to the current container
    try:
        for event, value in ijson.basic_parse(io.BytesIO(body)):
            if event == "map_key":
                path[-1] = str(value)
                continue
            if event in ("end_map", "end_array"):
                path.pop()
                continue
            if path and path[-1] == "item":  # a value (or the start of one) inside an array
                parent = path[:-1]
                for want in wanted:
                    if len(want) == len(parent) and all(w in ("*", p) for w, p in zip(want, parent, strict=True)):
                        key = ".".join(parent) + ".item"
                        counts[key] += 1
                        if event == "start_array":
                            counts[key + "[]"] += 1
                        if counts[key] > budget:
                            return dict(counts)
            if event in ("start_map", "start_array"):
                if len(path) >= MAX_STREAM_DEPTH:
                    return dict(counts)
                path.append("" if event == "start_map" else "item")
    except (ijson.JSONError, ijson.IncompleteJSONError, UnicodeDecodeError, ValueError):
        pass
    return dict(counts)
