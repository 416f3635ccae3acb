"""Image readers by `data.format` name: built-ins register with `@register_reader("name")`, installed
packages add readers through the `rooivalk.readers` entry-point group (rooivalk.plugins).

A reader takes the plan's `data.source` URI and returns a ReadResult (rooivalk.data.readers): decoded
samples, quarantine entries for whatever cannot become a sample, and the class names in order. The
`multisensor` format is not an image reader: rooivalk.data.ingest_multisensor ingests it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from rooivalk.plugins import READERS_GROUP, PluginError, PluginInfo, Registry

# (source URI) -> rooivalk.data.readers.ReadResult. `Any` here because readers.py registers its readers
# through this module; rooivalk.data.readers.read_source checks what a reader returns.
Reader = Callable[[str], Any]


def _accept(plugin: PluginInfo) -> Reader:
    if not callable(plugin.obj):
        raise PluginError(
            f"{plugin.describe()}: a data reader is a callable (source URI) -> ReadResult, "
            f"not {type(plugin.obj).__name__}"
        )
    return cast(Reader, plugin.obj)


_READERS: Registry[Reader] = Registry("data reader", READERS_GROUP, _accept)


def register_reader(name: str) -> Callable[[Reader], Reader]:
    """Decorator: make the function the reader of `data.format: <name>`."""

    def decorator(reader: Reader) -> Reader:
        _READERS.add(name, reader)
        return reader

    return decorator


def list_readers() -> list[str]:
    """Every image reader, installed plugins included (loads them)."""
    return _READERS.names()


def get_reader(name: str) -> Reader | None:
    """The reader of `data.format: <name>`, loading its plugin when needed; None for an unknown name."""
    return _READERS.lookup(name)


def known_readers() -> list[str]:
    """Registered and declared reader names, without loading any plugin (for error messages)."""
    return _READERS.known_names()


def reader_origin(name: str) -> str:
    """ "built-in", or "<distribution> <version> (<module:attr>)" for a plugin."""
    return _READERS.origin(name)
