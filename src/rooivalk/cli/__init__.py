"""The `rooivalk` command line. The orchestration layer (kfp, rooivalk_kfp) is imported
lazily inside the commands that need it, so `validate` and `schema` stay fast."""

from rooivalk.cli.app import app

__all__ = ["app"]
