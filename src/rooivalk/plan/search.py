"""The `search:` section: a hyperparameter search over any plan keys, run by `rooivalk search PLAN`.

Each trial is the plan with the sampled values set at their paths (as `--set path=value` would), validated
like any plan, trained through the one engine on the data ingested once, and scored by the best per-epoch
validation figure `objective.metric` (the names early stopping monitors: val_accuracy, val_loss,
val_map50 ...). The engine is Optuna (rooivalk.search); its study lives in `storage` (a database URL;
null: sqlite in the search's output folder).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from rooivalk.plan.base import Strict


class ParameterSpec(Strict):
    """One searched key: `choices`, or a range `low`..`high` (integers when both are, `log` for scales
    such as learning rates, `step` for a grid)."""

    choices: list[Any] | None = Field(None, min_length=1, description="the values to try")
    # int | float: pydantic keeps a YAML integer an int, so {low: 32, high: 256} samples whole numbers and
    # {low: 0.0, high: 0.5} (or {low: 0, high: 0.5}) real ones.
    low: int | float | None = None
    high: int | float | None = None
    log: bool = Field(False, description="sample the range on a log scale (low > 0)")
    step: int | float | None = Field(None, gt=0, description="a grid step in the range; needed by sampler: grid")

    @model_validator(mode="after")
    def _one_kind(self) -> ParameterSpec:
        scalars = (str, int, float, bool, type(None))
        if self.choices is not None and not all(isinstance(choice, scalars) for choice in self.choices):
            raise ValueError(f"choices must be numbers, strings, booleans or null, got {self.choices}")
        ranged = self.low is not None or self.high is not None
        if (self.choices is None) == (not ranged):
            raise ValueError("give either choices or low and high")
        if ranged:
            if self.low is None or self.high is None or not self.low < self.high:
                raise ValueError(f"a range needs low < high, got low={self.low}, high={self.high}")
            if self.log and self.low <= 0:
                raise ValueError(f"a log range needs low > 0, got {self.low}")
            if self.log and self.step is not None:
                raise ValueError("a log range takes no step")
        elif self.log or self.step is not None:
            raise ValueError("log and step apply to a range, not to choices")
        return self

    @property
    def integer(self) -> bool:
        """A range of whole numbers: low, high (and step) written as integers."""
        bounds = (self.low, self.high, 1 if self.step is None else self.step)
        return self.choices is None and all(isinstance(v, int) and not isinstance(v, bool) for v in bounds)

    def grid(self) -> list[Any]:
        """Every value sampler: grid tries."""
        if self.choices is not None:
            return list(self.choices)
        low, high, step = self.low, self.high, self.step
        if low is None or high is None or step is None:
            raise ValueError("a grid over a range needs low, high and step")
        count = int(round((high - low) / step)) + 1
        values = [low + i * step for i in range(count) if low + i * step <= high + 1e-12]
        return [int(round(v)) for v in values] if self.integer else values


class ObjectiveSpec(Strict):
    metric: str | None = Field(
        None,
        description="a per-epoch validation figure (as early_stopping.monitor: val_accuracy, val_loss, val_map50, "
        "val_f1 ...); a trial scores its best epoch; null: training.early_stopping.monitor (what the engine keeps "
        "the best epoch by). With evaluation.cross_validation: a fold mean, cv_<m>_mean with m accuracy, macro_f1, "
        "min_class_recall or log_loss (null: cv_accuracy_mean, or cv_log_loss_mean where val_loss is monitored)",
    )
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="null: minimize a *_loss figure, maximize the others"
    )

    @property
    def name(self) -> str:
        """The metric, resolved by the Plan's validator (a bare SearchSpec: val_accuracy)."""
        return self.metric or "val_accuracy"

    @property
    def resolved_direction(self) -> Literal["maximize", "minimize"]:
        if self.direction is not None:
            return self.direction
        return "minimize" if "loss" in self.name.split("_") else "maximize"  # val_loss, cv_log_loss_mean


class PrunerSpec(Strict):
    kind: Literal["median", "successive_halving", "none"] = Field(
        "median", description="stop a trial whose per-epoch figure trails the others' (Optuna's pruners)"
    )
    warmup_epochs: int = Field(1, ge=0, description="epochs every trial runs before it may be pruned")
    startup_trials: int = Field(2, ge=0, description="median: trials that finish before any is pruned")


class SearchSpec(Strict):
    """search: what `rooivalk search` varies and how it scores and samples trials."""

    space: dict[str, ParameterSpec] = Field(
        ..., min_length=1, description="plan key path (as --set takes it) -> its values or range"
    )
    sampler: Literal["tpe", "random", "grid"] = Field("tpe", description="Optuna's TPE, random, or the full grid")
    trials: int = Field(20, ge=1, description="trials in all (every worker together); grid: at most the grid's size")
    epoch_budget: int | None = Field(
        None,
        ge=1,
        description="stop starting trials once the study's trials together trained this many epochs (a pruned "
        "trial counts the epochs it ran, so what pruning saves buys more trials); trials stays the most that run; "
        "null: no budget",
    )
    objective: ObjectiveSpec = ObjectiveSpec()
    pruner: PrunerSpec = PrunerSpec()
    workers: int = Field(1, ge=1, le=64, description="trials run at once, each in its own process, on one study")
    storage: str | None = Field(
        None, description="the study's database URL (sqlite:///..., postgresql://...); null: sqlite in the output"
    )
    study_name: str | None = Field(None, description="null: the plan's name; a rerun with the same name continues")
    seed: int = Field(0, description="the sampler's seed")

    @model_validator(mode="after")
    def _grid(self) -> SearchSpec:
        if self.sampler == "grid":
            ungridded = [path for path, p in self.space.items() if p.choices is None and p.step is None]
            if ungridded:
                raise ValueError(f"sampler grid needs choices or a step for every key; {ungridded} have neither")
        return self


# Trials only train, on the data ingested once, under the search's own tracking, checkpoints and pods: keys
# under these would be set and then not used (or overwritten), so a search may not vary them.
NOT_SEARCHED = (
    "data",
    "search",
    "name",
    "description",
    "tracking",
    "cluster",
    "pipeline_root",
    "evaluation",
    "export",
    "monitoring",
    "retraining",
    "training.checkpoint",
    "training.distributed",
)


def search_section_problems(plan: Any) -> list[tuple[str, str]]:
    """What a plan's search section sets that its trials would not honour, with the path and the reason."""
    spec = plan.search
    problems = [
        (
            f"search.space.{path}",
            "trials only train, on data ingested once, under the search's own tracking, checkpoints and pods: "
            f"keys under {', '.join(NOT_SEARCHED)} are not searched",
        )
        for path in spec.space
        if any(path == key or path.startswith(f"{key}.") for key in NOT_SEARCHED)
    ]
    if plan.sensors is not None:
        problems.append(("search", "a search of a multi-sensor system is not built: search a sensor's own plan"))
    detector = plan.model.detector if plan.model is not None else None
    if plan.ensemble is not None or (detector is not None and detector.ensemble is not None):
        problems.append(("search", "an ensemble's members report their epochs one after another: search one model"))
    if plan.variants is not None:
        problems.append(
            (
                "search",
                "a variant ensemble's members train one after another: search one model, then list the values "
                "chosen as variants.members",
            )
        )
    if plan.training.distributed.nproc_per_node > 1:
        problems.append(("search", "distributed (DDP) trials report no per-epoch figures to the pruner"))
    pruner = spec.pruner
    if "startup_trials" in pruner.model_fields_set and pruner.kind != "median":
        problems.append(("search.pruner.startup_trials", f"applies to kind median, not {pruner.kind}"))
    if "warmup_epochs" in pruner.model_fields_set and pruner.kind == "none":
        problems.append(("search.pruner.warmup_epochs", "applies to a pruner; kind is none"))
    if spec.epoch_budget is not None and plan.evaluation.cross_validation is not None:
        problems.append(
            (
                "search.epoch_budget",
                "a cross-validated trial reports per fold, not per epoch: budget it by search.trials",
            )
        )
    if spec.storage is not None and _has_password(spec.storage):
        problems.append(
            (
                "search.storage",
                "holds a password, which would travel in plan parameters, MLflow and the compiled pipeline: give "
                "the URL without it and the password as PGPASSWORD (a cluster.secrets entry; libpq reads it)",
            )
        )
    return problems


def _has_password(url: str) -> bool:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).password is not None
    except ArgumentError:
        return False


def hide_password(url: str) -> str:
    """A database URL fit for logs and reports."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@")[-1]
