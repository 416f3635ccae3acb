"""The ingest-events step of a multi-sensor plan: simulate the source when the plan asks for it, then
ingest the event index into a versioned multi-sensor dataset (rooivalk.data.ingest_multisensor)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rooivalk import storage
from rooivalk.data.ingest_multisensor import INDEX_FILE, MultiSensorIngestResult, ingest_multisensor
from rooivalk.data.simulators.counter_drone import changed_settings, simulate_counter_drone, simulation_settings
from rooivalk.plan import Plan

ProgressFn = Callable[[dict[str, Any]], None]


def ensure_source(plan: Plan, progress: ProgressFn | None = None) -> None:
    """Simulate the plan's source when the plan asks for it and no event index exists there yet, or
    when the events there were simulated with other settings (then they are simulated again, so a
    changed plan never trains on stale data)."""
    source = plan.data.source.rstrip("/")
    if plan.data.simulate is None:
        return
    report = progress or (lambda _event: None)
    sim = plan.data.simulate
    if storage.exists(f"{source}/{INDEX_FILE}"):
        wanted = simulation_settings(sim.count, sim.seed, sim.image_size, sim.optical_field_px)
        changed = changed_settings(source, wanted)
        if not changed:
            return
        text = f"{source}: simulated with other settings ({', '.join(changed)}); simulating again"
        report({"event": "message", "text": text})

    report({"event": "message", "text": f"simulating {sim.count} events (seed {sim.seed}) into {source}"})
    simulate_counter_drone(
        source,
        sim.count,
        sim.seed,
        sim.image_size,
        progress=lambda done, total: report({"event": "batch", "stage": "simulate", "done": done, "total": total}),
        optical_field_px=sim.optical_field_px,
    )


def ingest_events(
    plan: Plan, dataset_dir: str, quarantine_uri: str | None = None, progress: ProgressFn | None = None
) -> MultiSensorIngestResult:
    sensors, _ = plan.multisensor_parts()
    ensure_source(plan, progress)
    # Sorted: the plan's key order does not survive KFP's parameter transport, and the dataset's
    # sensor order (its presence-mask columns, the fusion tokens) should not change between runs.
    return ingest_multisensor(plan.data, dataset_dir, sorted(sensors), quarantine_uri)
