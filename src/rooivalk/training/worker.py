"""One torchrun worker: `python -m torch.distributed.run ... -m rooivalk.training.worker PLAN DATASET MODEL`.

Rank 0 writes the result record that `rooivalk.training.engine.distributed.launch` returns.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from rooivalk.plan import Plan
from rooivalk.training.engine.distributed import RESULT_FILE
from rooivalk.training.engine.errors import Preempted
from rooivalk.training.trainer import train_model


def main(argv: list[str]) -> int:
    plan_path, dataset_dir, model_dir = argv
    plan = Plan.model_validate_json(Path(plan_path).read_text())
    from rooivalk import events

    try:
        progress = events.StepEmitter(os.environ.get(events.STEP_ENV, "train_model"))
        result = train_model(plan, dataset_dir, model_dir, progress=progress)
    except Preempted as stop:
        print(stop, file=sys.stderr)
        return 143
    if int(os.environ.get("RANK", "0")) == 0:
        Path(model_dir, RESULT_FILE).write_text(json.dumps(result.to_record(), default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
