"""Runs train_model in its own process so tests can SIGKILL / SIGTERM it (not collected by pytest)."""

import json
import sys
from pathlib import Path

from rooivalk.plan import Plan
from rooivalk.training import Preempted, train_model

if __name__ == "__main__":
    plan_path, dataset_dir, model_dir = sys.argv[1:4]
    plan = Plan.model_validate(json.loads(Path(plan_path).read_text()))
    try:
        train_model(plan, dataset_dir, model_dir)
    except Preempted as stop:
        print(stop, file=sys.stderr)
        sys.exit(143)
