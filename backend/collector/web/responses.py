"""The collector's JSON answers: Starlette's ``JSONResponse`` bytes, encoded by orjson.

Starlette encodes with Python's json (``ensure_ascii=False``, no spaces), which costs about 5 %
of an upload's request CPU (bench/bench_request_cpu.py --profile). ``compact_json`` writes the
same text byte for byte, through orjson wherever orjson's text is Python's, so the answers, their
``Content-Length`` and the clients that read them are unchanged.

One difference, for a value no answer holds: a NaN or infinite float is written ``null`` where
Starlette refused it (a 500). Answers hold the collector's own strings, booleans and integers and
values the client sent, which ``models.parse_json`` refuses NaN in; the status restore's stored
fields are read from the bucket and keep Starlette's encoder (``routes.uploads``).
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from ..compact_json import compact_json_bytes


class CompactJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return compact_json_bytes(content)
