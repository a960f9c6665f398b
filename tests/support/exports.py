"""Reading an export's tables back, in each format, for the export tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq


def read_table(out: Path, name: str, fmt: str) -> pd.DataFrame:
    """Table ``name`` of the export in ``out``; CSV cells as the exact strings written."""
    path = out / f"{name}.{fmt}"
    if fmt == "csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    if fmt == "jsonl":
        return pd.read_json(path, lines=True, dtype=False)
    return pq.read_table(path).to_pandas()
