"""Threat attribution of detected drones: the offline stand-in for a tabular attribution set.

Once the counter-drone sensors have detected and classified a drone, attribution asks who flies it
and why: a `hobbyist` (a recreational pilot flying for fun or filming), `commercial` (a business
operation: inspection, mapping, delivery), `surveillance` (someone watching the protected site
from a stand-off: loitering, high, patient) or `hostile` (an intrusion or attack run on the site).
The answer is read from what the sensors already measure: the control link (the RF sensor's
protocol, band, power, bandwidth and hop rate), the radar track (speed, altitude, climb, turn rate,
range, loitering, speed towards the site), when it flies and an estimate of what it carries.

`simulate_attribution(dest_uri, count, seed)` writes one row per event through rooivalk.storage:
id, label, the categorical rf_protocol and rf_band, then the numeric FEATURES. A `dest_uri`
ending in .parquet or .csv is the table; any other is a folder that gets attribution.parquet.
simulation.json (settings, classes, features, generator version) is written beside it, before it.

Each event is an airframe archetype flown with an intent. The archetype (camera quad, FPV quad,
enterprise quad, fixed wing) sets how the drone can fly and which link it uses; the class picks
archetypes from its own mix and adds its intent: when it flies, how far out, how much it loiters,
whether it heads for the site, whether it flies radio-silent, how low and what it carries. The
classes share archetypes (a hostile pilot may fly the same consumer quad as a hobbyist, a survey
fixed wing looks like a surveillance one), so a good classifier is well above chance and not
perfect: gradient boosting scores 0.85 to 0.91 on held-out rows of 2000 to 4000 events.

No cell is ever missing: the table reader quarantines rows with missing numeric cells. A link that
is not detected (radio silence: pre-programmed or autonomous flight; or a link too faint at its
range) reads rf_protocol = rf_band = "none", with the sentinels rf_power_dbm = NO_LINK_POWER_DBM (the
receiver's noise floor: nothing above it), rf_bandwidth_mhz = 0 and hop_rate_hz = 0. A fixed link
(WiFi, analog video) also has hop_rate_hz = 0. is_weekend is 0 or 1.

Deterministic by seed: sample i has its own generator spawned from the seed, so it is the same
whatever `count` is, and a bigger simulation extends a smaller one. Labels cycle through the
classes (sample i is class i mod 4), so every class is equally represented.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rooivalk.data.simulators.table_output import table_location, write_simulated_table
from rooivalk.data.source_tables import SIMULATION_META

GENERATOR_VERSION = "attribution-sim/1"
META_FILE = SIMULATION_META  # the metadata the ingest step reads (and never takes for data)
TABLE_FILE = "attribution.parquet"
ID_COLUMN = "id"  # the name the table reader keeps as the row id, never a feature
CLASSES = ["hobbyist", "commercial", "surveillance", "hostile"]
PROTOCOLS = ["dji_ocusync", "wifi_fpv", "analog_fpv", "lora_telemetry", "elrs", "none"]
BANDS = ["433MHz", "868MHz", "915MHz", "2.4GHz", "5.8GHz", "none"]
CATEGORICAL_FEATURES = ["rf_protocol", "rf_band"]
NUMERIC_FEATURES = [
    "rf_power_dbm",
    "rf_bandwidth_mhz",
    "hop_rate_hz",
    "speed_mps",
    "altitude_m",
    "climb_rate_mps",
    "heading_change_dps",
    "range_m",
    "loiter_fraction",
    "approach_speed_mps",
    "time_of_day_h",
    "is_weekend",
    "payload_kg_est",
]
FEATURES = [*CATEGORICAL_FEATURES, *NUMERIC_FEATURES]  # every column but id and label
NO_LINK_POWER_DBM = -120.0
_SENSITIVITY_DBM = -105.0  # a link received below this is not detected
_BAND_MHZ = {"433MHz": 433.0, "868MHz": 868.0, "915MHz": 915.0, "2.4GHz": 2440.0, "5.8GHz": 5800.0}


@dataclass(frozen=True)
class Link:
    """A control or video link: where it transmits and how it looks to the RF sensor."""

    bands: tuple[str, ...]
    eirp_dbm: tuple[float, float]  # uniform
    bandwidths_mhz: tuple[float, ...]  # one of these, measured with 5% error
    hop_rate_hz: tuple[float, float]  # uniform; (0, 0) for a fixed channel


_LINKS = {
    "dji_ocusync": Link(("2.4GHz", "5.8GHz"), (19.0, 26.0), (10.0, 20.0, 40.0), (5.0, 40.0)),
    "wifi_fpv": Link(("2.4GHz", "5.8GHz"), (16.0, 23.0), (20.0, 40.0), (0.0, 0.0)),
    "analog_fpv": Link(("5.8GHz",), (14.0, 29.0), (18.0,), (0.0, 0.0)),  # 25 to 800 mW FM video
    "lora_telemetry": Link(("433MHz", "868MHz", "915MHz"), (14.0, 30.0), (0.125, 0.25, 0.5), (10.0, 50.0)),
    "elrs": Link(("868MHz", "915MHz", "2.4GHz"), (10.0, 30.0), (0.5, 0.8), (12.5, 125.0)),
}


@dataclass(frozen=True)
class Archetype:
    """How one kind of airframe flies and which links it carries."""

    links: dict[str, float]  # protocol -> probability
    speed_mps: tuple[float, float]  # log-uniform cruise speed
    altitude_m: tuple[float, float]  # log-uniform
    climb_sd_mps: float
    turn_dps: tuple[float, float]  # log-uniform mean absolute turn rate
    payload_kg: tuple[float, float]  # uniform: camera, gimbal, battery beyond the bare airframe
    hovers: bool  # a multirotor can hold its place; a fixed wing loiters by circling


_ARCHETYPES = {
    "camera_quad": Archetype(
        links={"dji_ocusync": 0.8, "wifi_fpv": 0.2},
        speed_mps=(2.0, 15.0),
        altitude_m=(15.0, 120.0),
        climb_sd_mps=1.5,
        turn_dps=(4.0, 30.0),
        payload_kg=(0.0, 0.3),
        hovers=True,
    ),
    "fpv_quad": Archetype(
        links={"analog_fpv": 0.5, "elrs": 0.35, "wifi_fpv": 0.15},
        speed_mps=(10.0, 35.0),
        altitude_m=(2.0, 60.0),
        climb_sd_mps=4.0,
        turn_dps=(30.0, 150.0),
        payload_kg=(0.1, 0.4),
        hovers=True,
    ),
    "enterprise_quad": Archetype(
        links={"dji_ocusync": 0.6, "lora_telemetry": 0.4},
        speed_mps=(3.0, 15.0),
        altitude_m=(30.0, 150.0),
        climb_sd_mps=1.5,
        turn_dps=(2.0, 15.0),
        payload_kg=(0.3, 2.5),
        hovers=True,
    ),
    "fixed_wing": Archetype(
        links={"lora_telemetry": 0.6, "elrs": 0.4},
        speed_mps=(14.0, 30.0),
        altitude_m=(60.0, 400.0),
        climb_sd_mps=2.0,
        turn_dps=(2.0, 12.0),
        payload_kg=(0.2, 1.5),
        hovers=False,
    ),
}


@dataclass(frozen=True)
class Intent:
    """What the class adds to the airframe: when, where and how it flies."""

    archetypes: dict[str, float]  # archetype -> probability
    hours: tuple[tuple[float, float, float], ...]  # (weight, mean, sd) of a wrapped normal mixture
    weekend: float  # probability of a weekend day (2/7 when indifferent)
    range_m: tuple[float, float]  # log-uniform distance from the protected site
    loiter: tuple[float, float]  # beta(a, b) fraction of the track spent holding or circling
    heads_in: float  # probability of flying towards the site, otherwise the heading is random
    silent: float  # probability of no control link (pre-programmed or autonomous flight)
    altitude_scale: float
    extra_payload_kg: tuple[float, float]  # uniform: a delivered parcel or a dropped/explosive charge


_INTENTS = {
    "hobbyist": Intent(
        archetypes={"camera_quad": 0.6, "fpv_quad": 0.32, "fixed_wing": 0.08},
        hours=((1.0, 14.5, 3.0),),
        weekend=0.55,
        range_m=(150.0, 1500.0),
        loiter=(3.0, 3.0),
        heads_in=0.15,
        silent=0.02,
        altitude_scale=1.0,
        extra_payload_kg=(0.0, 0.0),
    ),
    "commercial": Intent(
        archetypes={"enterprise_quad": 0.6, "fixed_wing": 0.25, "camera_quad": 0.15},
        hours=((1.0, 11.5, 3.0),),
        weekend=0.15,
        range_m=(300.0, 3000.0),
        loiter=(2.0, 5.0),
        heads_in=0.25,
        silent=0.08,
        altitude_scale=1.0,
        extra_payload_kg=(0.0, 1.5),
    ),
    "surveillance": Intent(
        archetypes={"enterprise_quad": 0.35, "fixed_wing": 0.4, "camera_quad": 0.25},
        hours=((0.35, 6.0, 1.5), (0.35, 19.5, 1.5), (0.3, 12.0, 6.0)),  # dawn, dusk, any time
        weekend=0.3,
        range_m=(600.0, 4000.0),
        loiter=(4.0, 2.5),
        heads_in=0.2,
        silent=0.3,
        altitude_scale=1.5,
        extra_payload_kg=(0.0, 0.3),
    ),
    "hostile": Intent(
        archetypes={"fpv_quad": 0.45, "camera_quad": 0.2, "enterprise_quad": 0.15, "fixed_wing": 0.2},
        hours=((0.7, 2.0, 3.0), (0.3, 13.0, 5.0)),  # mostly at night
        weekend=0.35,
        range_m=(100.0, 2500.0),
        loiter=(1.5, 5.0),
        heads_in=0.75,
        silent=0.3,
        altitude_scale=0.6,
        extra_payload_kg=(0.3, 2.5),
    ),
}


def _pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[name] for name in names])
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(math.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1]))))


def _free_space_loss_db(range_m: float, frequency_mhz: float) -> float:
    return 20 * math.log10(range_m / 1000) + 20 * math.log10(frequency_mhz) + 32.44


def _rf_features(rng: np.random.Generator, protocol: str, range_m: float) -> dict[str, object]:
    """The RF sensor's view of the link at this range; the sentinels where nothing is detected."""
    if protocol != "none":
        link = _LINKS[protocol]
        band = link.bands[int(rng.integers(len(link.bands)))]
        # Free-space loss plus log-normal fading (multipath, antenna orientation).
        power = rng.uniform(*link.eirp_dbm) - _free_space_loss_db(range_m, _BAND_MHZ[band]) + rng.normal(0.0, 4.0)
        if power >= _SENSITIVITY_DBM:
            return {
                "rf_protocol": protocol,
                "rf_band": band,
                "rf_power_dbm": power,
                "rf_bandwidth_mhz": link.bandwidths_mhz[int(rng.integers(len(link.bandwidths_mhz)))]
                * (1 + rng.normal(0.0, 0.05)),
                "hop_rate_hz": rng.uniform(*link.hop_rate_hz) * (1 + rng.normal(0.0, 0.05)),
            }
    return {
        "rf_protocol": "none",
        "rf_band": "none",
        "rf_power_dbm": NO_LINK_POWER_DBM,
        "rf_bandwidth_mhz": 0.0,
        "hop_rate_hz": 0.0,
    }


def draw_event(label: str, rng: np.random.Generator) -> dict[str, object]:
    """The features of one `label` event (the FEATURES keys), drawn from `rng`."""
    intent = _INTENTS[label]
    airframe = _ARCHETYPES[_pick(rng, intent.archetypes)]
    protocol = "none" if rng.random() < intent.silent else _pick(rng, airframe.links)
    range_m = _log_uniform(rng, intent.range_m)
    loiter = float(rng.beta(*intent.loiter))
    # Holding still drags the track's mean speed down; a fixed wing circles at cruise speed.
    speed = _log_uniform(rng, airframe.speed_mps) * ((1 - 0.8 * loiter) if airframe.hovers else 1.0)
    heading_in = rng.random() < intent.heads_in
    cos_bearing = rng.uniform(0.5, 1.0) if heading_in else rng.uniform(-1.0, 1.0)
    # Loitering turns more: a fixed wing circles, a multirotor yaws and repositions.
    turn = _log_uniform(rng, airframe.turn_dps) * (1 + loiter)
    weights = np.array([weight for weight, _, _ in intent.hours])
    _, mean_h, sd_h = intent.hours[int(rng.choice(len(weights), p=weights / weights.sum()))]
    return {
        **_rf_features(rng, protocol, range_m),
        "speed_mps": speed,
        "altitude_m": min(_log_uniform(rng, airframe.altitude_m) * intent.altitude_scale, 600.0),
        "climb_rate_mps": rng.normal(0.0, airframe.climb_sd_mps),
        "heading_change_dps": turn,
        "range_m": range_m,
        "loiter_fraction": loiter,
        "approach_speed_mps": speed * cos_bearing * (1 - loiter if heading_in else 1.0) + rng.normal(0.0, 0.5),
        "time_of_day_h": float(rng.normal(mean_h, sd_h)) % 24.0,
        "is_weekend": int(rng.random() < intent.weekend),
        "payload_kg_est": max(
            0.0, rng.uniform(*airframe.payload_kg) + rng.uniform(*intent.extra_payload_kg) + rng.normal(0.0, 0.3)
        ),
    }


def simulation_settings(count: int, seed: int) -> dict[str, object]:
    """What decides the simulated events: written to simulation.json."""
    return {"generator": GENERATOR_VERSION, "count": count, "seed": seed}


@dataclass(frozen=True)
class AttributionSimulationResult:
    table_uri: str
    meta_uri: str
    count: int
    class_counts: dict[str, int]
    rows: int


def simulate_attribution(
    dest_uri: str,
    count: int,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> AttributionSimulationResult:
    """Simulate `count` attributed events and write them, one row each (the table last, so a reader
    never sees a table without its simulation.json)."""
    if count < len(CLASSES):
        raise ValueError(f"count must be at least {len(CLASSES)} (one event per class), got {count}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    table_uri, _ = table_location(dest_uri, TABLE_FILE)
    rows: list[dict[str, object]] = []
    # One child stream per event: event i does not depend on how many events follow it.
    for index, child in enumerate(np.random.SeedSequence(seed).spawn(count)):
        label = CLASSES[index % len(CLASSES)]
        event = draw_event(label, np.random.default_rng(child))
        rows.append({ID_COLUMN: f"attr{seed:04d}-{index:06d}", "label": label, **event})
        if progress is not None:
            progress(index + 1, count)
    table = pd.DataFrame(rows, columns=[ID_COLUMN, "label", *FEATURES])
    table[NUMERIC_FEATURES] = table[NUMERIC_FEATURES].astype(np.float64)
    table["is_weekend"] = table["is_weekend"].astype(np.int64)
    meta = {
        **simulation_settings(count, seed),
        "classes": CLASSES,
        "id_column": ID_COLUMN,
        "features": FEATURES,
        "categorical_features": CATEGORICAL_FEATURES,
        "numeric_features": NUMERIC_FEATURES,
        "sentinels": {
            "rf_protocol": "none",
            "rf_band": "none",
            "rf_power_dbm": NO_LINK_POWER_DBM,
            "rf_bandwidth_mhz": 0.0,
            "hop_rate_hz": 0.0,
        },
    }
    meta_uri = write_simulated_table(table_uri, table, meta)
    counts = {name: count // len(CLASSES) + (k < count % len(CLASSES)) for k, name in enumerate(CLASSES)}
    return AttributionSimulationResult(table_uri, meta_uri, count, counts, len(table))
