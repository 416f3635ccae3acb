"""Where and how the table simulators (sign_language, attribution) write: one table file, CSV or
Parquet by its extension, with the simulation's settings in simulation.json beside it (the file the
ingest step reads to tell a simulated source from a user's own, rooivalk.data.ingest_plan)."""

from __future__ import annotations

import io
import json
from typing import Any

import pandas as pd

from rooivalk import storage
from rooivalk.data.source_tables import SIMULATION_META

TABLE_SUFFIXES = (".parquet", ".csv")


def table_location(dest_uri: str, default_name: str) -> tuple[str, str]:
    """(table URI, its folder): `dest_uri` itself when it names a table file, else `default_name` inside it."""
    table_uri = dest_uri if dest_uri.endswith(TABLE_SUFFIXES) else f"{dest_uri.rstrip('/')}/{default_name}"
    return table_uri, table_uri.rsplit("/", 1)[0] if "/" in table_uri else "."


def write_simulated_table(table_uri: str, frame: pd.DataFrame, meta: dict[str, Any]) -> str:
    """simulation.json (with `table`: the file's name) first, the table last, so that a reader never sees
    a table without its settings; returns the simulation.json URI."""
    folder = table_uri.rsplit("/", 1)[0] if "/" in table_uri else "."
    meta_uri = f"{folder}/{SIMULATION_META}"
    storage.write_text(meta_uri, json.dumps({**meta, "table": table_uri.rsplit("/", 1)[-1]}, indent=2))
    buffer = io.BytesIO()
    if table_uri.endswith(".csv"):
        frame.to_csv(buffer, index=False, float_format="%.6g")
    else:
        frame.to_parquet(buffer, index=False)
    storage.write_bytes(table_uri, buffer.getvalue())
    return meta_uri
