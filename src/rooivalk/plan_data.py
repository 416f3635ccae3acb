"""`data.format`: a built-in format or the name of an installed reader plugin.

The check reads entry-point metadata only (rooivalk.plugins.declared_entry_points, about 10 ms and
only for a name that is not built in): validating a plan imports no reader, and so no torch.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

from rooivalk.plugins import READERS_GROUP, declared_entry_points

# The image readers of rooivalk.data.readers, and multisensor (rooivalk.data.ingest_multisensor).
BUILTIN_DATA_FORMATS = ("image_folder", "idx", "multisensor")


def known_data_formats() -> list[str]:
    """Built-in formats, then the declared reader plugins' names."""
    plugins = [entry.name for entry in declared_entry_points(READERS_GROUP)]
    return [*BUILTIN_DATA_FORMATS, *(name for name in plugins if name not in BUILTIN_DATA_FORMATS)]


def check_data_format(value: str) -> str:
    if value in BUILTIN_DATA_FORMATS:
        return value
    known = known_data_formats()
    if value in known:
        return value
    raise ValueError(
        f"unknown data format {value!r}; known formats: {', '.join(known)} (a reader plugin adds one through "
        f"the {READERS_GROUP!r} entry-point group; `rooivalk families` lists them)"
    )


DataFormat = Annotated[str, AfterValidator(check_data_format)]
