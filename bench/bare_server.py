"""The HTTP ceiling: a bare FastAPI endpoint that parses the upload's JSON and stores nothing.

uvicorn --factory --app-dir bench bare_server:create --workers 2
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def create() -> FastAPI:
    app = FastAPI()

    @app.post("/api/upload-user-data")
    async def bare(request: Request) -> JSONResponse:
        document = json.loads(await request.body())
        return JSONResponse({"status": "success", "participantId": document.get("participantId")})

    return app
