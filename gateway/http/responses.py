"""The prediction endpoints' JSON response: encoded by orjson (several times faster than the standard
library's json for these small bodies; numpy scalars and non-text keys are taken as they are)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class FastJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_OPTIONS)
