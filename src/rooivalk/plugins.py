"""Extension points: installed packages add model families, data readers and training tasks.

A distribution declares entry points in its pyproject.toml (docs/extending.md):

    [project.entry-points."rooivalk.families"]
    example_mlp_cnn = "rooivalk_example_plugin.model:create_example_mlp_cnn"

`declared_entry_points` reads installed metadata only (about 10 ms, nothing imported), so a plan can
be checked against plugin names without importing torch. `load_entry_points` imports each plugin once;
one that fails raises PluginError naming the entry point, its distribution and the cause: a broken
plugin is never skipped. `Registry` is the name -> object table of one extension point: built-ins
register in-tree, plugins load the first time a lookup misses or the names are listed, and a plugin
cannot take a built-in's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Generic, TypeVar

FAMILIES_GROUP = "rooivalk.families"
READERS_GROUP = "rooivalk.readers"
TASKS_GROUP = "rooivalk.tasks"
GROUPS = (FAMILIES_GROUP, READERS_GROUP, TASKS_GROUP)
BUILT_IN = "built-in"

T = TypeVar("T")


class PluginError(ValueError):
    """A plugin that cannot be used (fails to import, clashes, wrong kind); the message names its
    entry point and distribution."""


@dataclass(frozen=True)
class EntryPointInfo:
    """One declared entry point, read from installed metadata without importing anything."""

    group: str
    name: str
    value: str  # "module:attr"
    distribution: str
    version: str

    @property
    def origin(self) -> str:
        return f"{self.distribution} {self.version} ({self.value})"

    def describe(self) -> str:
        return f"{self.group} entry point {self.name!r} = {self.value!r} of {self.distribution} {self.version}"


@dataclass(frozen=True)
class PluginInfo(EntryPointInfo):
    """A loaded entry point: what `module:attr` names."""

    obj: object


def declared_entry_points(group: str) -> list[EntryPointInfo]:
    """The group's entry points by name; two distributions declaring one name is refused."""
    found: dict[str, EntryPointInfo] = {}
    for entry in metadata.entry_points(group=group):
        dist = entry.dist
        info = EntryPointInfo(group, entry.name, entry.value, dist.name if dist else "?", dist.version if dist else "?")
        other = found.get(entry.name)
        if other is not None and other != info:
            raise PluginError(
                f"{group}: two entry points are named {entry.name!r}: {other.value!r} of {other.distribution} "
                f"and {info.value!r} of {info.distribution}; uninstall or rename one"
            )
        found[entry.name] = info
    return [found[name] for name in sorted(found)]


_LOADED: dict[EntryPointInfo, PluginInfo] = {}


def load_entry_point(entry: EntryPointInfo) -> PluginInfo:
    """Import what the entry point names (once per process)."""
    if entry not in _LOADED:
        try:
            obj = metadata.EntryPoint(name=entry.name, value=entry.value, group=entry.group).load()
        except Exception as error:  # any import-time failure of third-party code
            raise PluginError(f"{entry.describe()} failed to load: {type(error).__name__}: {error}") from error
        _LOADED[entry] = PluginInfo(**asdict(entry), obj=obj)
    return _LOADED[entry]


def load_entry_points(group: str) -> list[PluginInfo]:
    """Every entry point of the group, loaded, by name."""
    return [load_entry_point(entry) for entry in declared_entry_points(group)]


def _code_origin(item: object) -> str:
    module = str(getattr(item, "__module__", "") or "")
    return BUILT_IN if module.split(".")[0] == "rooivalk" else f"registered in code ({module or '?'})"


class Registry(Generic[T]):
    """Names -> objects of one extension point (`kind` names it in messages, `group` is its entry-point
    group). `accept` turns a plugin that did not register itself into an item, or raises PluginError."""

    def __init__(self, kind: str, group: str, accept: Callable[[PluginInfo], T]) -> None:
        self.kind = kind
        self.group = group
        self._accept = accept
        self._items: dict[str, T] = {}
        self._origins: dict[str, str] = {}

    def add(self, name: str, item: T) -> None:
        """Register in code: "built-in" for rooivalk's own modules; a plugin's origin is set when it loads."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered ({self._origins[name]})")
        self._items[name] = item
        self._origins[name] = _code_origin(item)

    def lookup(self, name: str) -> T | None:
        """The item, loading the plugin of that name when nothing in-tree has it; None if none."""
        if name not in self._items:
            self.load_plugins(name)
        return self._items.get(name)

    def names(self) -> list[str]:
        """Every name, all plugins loaded."""
        self.load_plugins()
        return sorted(self._items)

    def known_names(self) -> list[str]:
        """Registered names and declared plugin names, nothing imported (for error messages)."""
        return sorted({*self._items, *(entry.name for entry in declared_entry_points(self.group))})

    def origin(self, name: str) -> str:
        """ "built-in", "<distribution> <version> (<module:attr>)", or "registered in code (<module>)"."""
        if self.lookup(name) is None:
            raise KeyError(name)
        return self._origins[name]

    def load_plugins(self, name: str | None = None) -> None:
        """Load the group's entry points (only `name`'s, when given) that are not registered yet."""
        for entry in declared_entry_points(self.group):
            if name is None or entry.name == name:
                self._adopt(entry)

    def _adopt(self, entry: EntryPointInfo) -> None:
        if self._origins.get(entry.name) == entry.origin:
            return
        if self._origins.get(entry.name) == BUILT_IN:  # refused before its code runs
            raise PluginError(
                f"{entry.describe()}: {entry.name!r} is a built-in {self.kind}; a plugin cannot replace it, "
                "rename the entry point"
            )
        plugin = load_entry_point(entry)  # a decorated plugin registers itself while it is imported
        current = self._items.get(entry.name)
        if current is None:
            elsewhere = [name for name, item in self._items.items() if item is plugin.obj]
            if elsewhere:
                raise PluginError(
                    f"{entry.describe()}: its code registers {self.kind} {elsewhere[0]!r}; the entry point and "
                    "the registered name must be the same"
                )
            self._items[entry.name] = self._accept(plugin)
        elif current is not plugin.obj:
            raise PluginError(
                f"{entry.describe()}: {self.kind} {entry.name!r} is already registered ({self._origins[entry.name]})"
            )
        self._origins[entry.name] = entry.origin
