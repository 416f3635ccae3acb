"""What happened in one counter-drone event: the shared ground truth all four sensors observe.

A `Scene` is drawn once per event and every sensor renders from the same scene, so the sensors
agree on the label but each is blinded by different scene variables: optics by range, fog and
rain; RF by radio silence and urban WiFi; radar by range (micro-Doppler fades into noise) and by
slow clutter that looks like hovering; acoustics by range and wind. No single sensor sees every
class well, which is what gives fusion something to add.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

CLASSES = ["commercial_drone", "military_drone", "bird", "aircraft", "clutter"]
# Class prior of a simulated stream; the reference plan's optical set has roughly these proportions.
CLASS_WEIGHTS = [0.25, 0.15, 0.25, 0.15, 0.20]

# airframe: what the object is physically (drives silhouette, acoustics, micro-Doppler, RCS).
# motion: how it moves (drives the radar track).
_AIRFRAMES = {
    "commercial_drone": (["quadcopter", "quadcopter_large", "fixed_wing"], [0.65, 0.25, 0.10]),
    "military_drone": (["fixed_wing", "quadcopter_large"], [0.65, 0.35]),
    "bird": (["bird", "flock"], [0.7, 0.3]),
    "aircraft": (["aircraft"], [1.0]),
    "clutter": (["cloud", "balloon", "empty"], [0.4, 0.2, 0.4]),
}
_RANGES_M = {  # uniform in log-range between these bounds
    "commercial_drone": (80.0, 1500.0),
    "military_drone": (150.0, 2500.0),
    "bird": (40.0, 900.0),
    "aircraft": (2000.0, 9000.0),
    "clutter": (100.0, 3000.0),
}
# Physical span in metres; apparent size in pixels = span * FOCAL_PX_PER_KM / range_km.
SPAN_M = {
    "quadcopter": 0.45,
    "quadcopter_large": 1.1,
    "fixed_wing": 2.8,
    "bird": 0.6,
    "flock": 6.0,
    "aircraft": 35.0,
    "cloud": 80.0,
    "balloon": 1.5,
    "empty": 0.0,
}
FOCAL_PX_PER_KM = 9000.0  # a narrow-field tracking camera: a 0.45 m drone at 500 m spans ~8 px of 128


@dataclass(frozen=True)
class Scene:
    label: str
    airframe: str
    motion: str  # hover | transit | evasive | soar | flap | straight | static | drift
    range_m: float
    speed_mps: float
    heading_rad: float
    altitude_m: float
    weather: str  # clear | fog | rain
    visibility_m: float  # fog: contrast falls as exp(-range / visibility)
    wind_mps: float
    rf_link: str  # ofdm | fhss | datalink | transponder | none
    rf_interference: bool  # urban WiFi in band, whatever the object is
    pose_rad: float
    seed: int  # the event's own generator seed: each sensor derives its stream from it

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def _choice(rng: np.random.Generator, options: list[str], weights: list[float]) -> str:
    return str(options[int(rng.choice(len(options), p=np.asarray(weights) / sum(weights)))])


def _motion(label: str, airframe: str, rng: np.random.Generator) -> tuple[str, float]:
    """(motion, speed m/s): drones hover, transit or evade; fixed wings cannot hover."""
    if label in ("commercial_drone", "military_drone"):
        options = ["transit", "evasive"] if airframe == "fixed_wing" else ["hover", "transit", "evasive"]
        motion = str(rng.choice(options))
        top = 32.0 if label == "military_drone" else 20.0
        speeds = {"hover": (0.0, 1.5), "transit": (6.0, top), "evasive": (8.0, top + 5.0)}
        return motion, float(rng.uniform(*speeds[motion]))
    if label == "bird":
        return ("flap" if rng.random() < 0.6 else "soar"), float(rng.uniform(4.0, 18.0))
    if label == "aircraft":
        return "straight", float(rng.uniform(60.0, 240.0))
    return ("static" if rng.random() < 0.5 else "drift"), float(rng.uniform(0.0, 6.0))


def _rf_link(label: str, airframe: str, rng: np.random.Generator) -> str:
    if label == "commercial_drone":
        # Some commercial drones fly pre-programmed routes with the control link off.
        return "none" if rng.random() < 0.25 else _choice(rng, ["ofdm", "fhss"], [0.55, 0.45])
    if label == "military_drone":
        return "none" if rng.random() < 0.45 else "datalink"
    if label == "aircraft":
        return "transponder" if rng.random() < 0.85 else "none"  # small aircraft may not squawk
    return "none"


def sample_scene(rng: np.random.Generator, label: str | None = None) -> Scene:
    """One event's ground truth; `label` fixes the class, otherwise it follows CLASS_WEIGHTS."""
    label = label or _choice(rng, CLASSES, CLASS_WEIGHTS)
    options, weights = _AIRFRAMES[label]
    airframe = _choice(rng, options, weights)
    motion, speed = _motion(label, airframe, rng)
    low, high = _RANGES_M[label]
    range_m = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    weather = _choice(rng, ["clear", "fog", "rain"], [0.55, 0.25, 0.20])
    visibility = float(rng.uniform(300.0, 1500.0)) if weather == "fog" else 20000.0
    altitude = float(rng.uniform(800.0, 9000.0)) if label == "aircraft" else float(rng.uniform(5.0, 300.0))
    return Scene(
        label=label,
        airframe=airframe,
        motion=motion,
        range_m=range_m,
        speed_mps=speed,
        heading_rad=float(rng.uniform(0, 2 * np.pi)),
        altitude_m=altitude,
        weather=weather,
        visibility_m=visibility,
        wind_mps=float(rng.gamma(2.0, 3.0)),
        rf_link=_rf_link(label, airframe, rng),
        rf_interference=bool(rng.random() < 0.35),
        pose_rad=float(rng.uniform(0, 2 * np.pi)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )
