"""The naive server a research team might write instead of this collector: Flask, two plain file writes.

No fsync, no atomic rename, no conditional writes: a crash can lose or tear what it answered 200
for. It is the baseline ``bench_ingest.py`` compares the collector with; run it under gunicorn::

    NAIVE_DATA_DIR=/tmp/naive gunicorn -w 2 -k gthread --threads 8 --chdir bench naive_server:app
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask, jsonify, request

app = Flask(__name__)
ROOT = Path(os.environ.get("NAIVE_DATA_DIR", "./naive-data"))


@app.post("/api/upload-user-data")
def upload_user_data():  # type: ignore[no-untyped-def]
    data = request.get_json(force=True)
    pid = data["participantId"]
    folder = ROOT / "participants" / pid
    os.makedirs(folder / "submissions", exist_ok=True)
    now = datetime.now(UTC)
    files = []
    if data.get("uploadType") == "submission":
        name = folder / "submissions" / f"{pid}_Complete_{now:%Y-%m-%d_%H-%M-%S}.json"
        with open(name, "w") as handle:
            json.dump(data, handle)
        files.append(str(name))
    status = {k: v for k, v in data.items() if k != "submissionData"}
    with open(folder / "status.json", "w") as handle:
        json.dump(status, handle)
    files.append(str(folder / "status.json"))
    return jsonify({"status": "success", "participantId": pid, "filesUploaded": files})
