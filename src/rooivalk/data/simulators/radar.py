"""Radar sensor: a track of TRACK_STEPS plots (position, velocity, micro-Doppler, RCS) at 2 Hz.

Kinematics by motion: hover (station-keeping jitter), transit (straight), evasive (turns and climbs),
birds flapping or soaring, aircraft fast and straight, clutter static or drifting with the wind.
Micro-Doppler is the spectral spread of the returns: spinning rotors give a strong, fast one
(quadcopters), a single propeller a weaker one, flapping wings a slow periodic one. Both the
micro-Doppler and the position accuracy degrade with range, so a far drone and a far bird blur
together; slow clutter passes for a hovering drone.
"""

from __future__ import annotations

import math

import numpy as np

from rooivalk.data.simulators.scene import Scene

TRACK_STEPS = 32
STEP_SECONDS = 0.5
FEATURES = ["x_km", "y_km", "z_km", "vx", "vy", "vz", "micro_doppler", "rcs_dbsm"]
_MICRO_DOPPLER = {
    "quadcopter": 1.0, "quadcopter_large": 0.9, "fixed_wing": 0.45, "bird": 0.35, "flock": 0.3,
    "aircraft": 0.6, "cloud": 0.02, "balloon": 0.05, "empty": 0.0,
}  # fmt: skip
# Mean radar cross-section; small drones and birds overlap (both are a few hundred cm^2).
_RCS_DBSM = {
    "quadcopter": -20.0, "quadcopter_large": -16.0, "fixed_wing": -14.0, "bird": -19.0, "flock": -13.0,
    "aircraft": 15.0, "cloud": -18.0, "balloon": -12.0, "empty": -24.0,
}  # fmt: skip


def _velocities(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """(TRACK_STEPS, 3) velocity in m/s."""
    heading = scene.heading_rad
    climb = 0.0
    velocity = np.zeros((TRACK_STEPS, 3))
    for t in range(TRACK_STEPS):
        speed = scene.speed_mps
        if scene.motion == "evasive" and rng.random() < 0.25:
            heading += rng.normal(0, 1.2)
            climb = rng.normal(0, 3)
        elif scene.motion in ("flap", "soar"):
            heading += rng.normal(0, 0.15)
            climb = rng.normal(0, 0.8)
        elif scene.motion == "drift":
            heading += rng.normal(0, 0.05)
        elif scene.motion == "hover":
            heading = rng.uniform(0, 2 * math.pi)
            speed = abs(rng.normal(0, scene.speed_mps + 0.3))
        elif scene.motion == "static":
            speed = 0.0
        velocity[t] = [speed * math.cos(heading), speed * math.sin(heading), climb]
    return velocity


def _micro_doppler(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """(TRACK_STEPS,) observed micro-Doppler spread: true signature faded by range, plus noise."""
    base = _MICRO_DOPPLER[scene.airframe]
    t = np.arange(TRACK_STEPS) * STEP_SECONDS
    if scene.airframe in ("bird", "flock") and scene.motion == "flap":
        # Wing beats of 2-8 Hz alias to a slow oscillation at 2 Hz plots.
        signature = base * (1 + 0.6 * np.sin(2 * math.pi * rng.uniform(0.15, 0.9) * t + rng.uniform(0, 6.3)))
    elif scene.airframe in ("bird", "flock"):
        signature = np.full(TRACK_STEPS, base * 0.3)
    else:
        signature = np.full(TRACK_STEPS, base) * rng.uniform(0.8, 1.2)
    fade = math.exp(-scene.range_m / 500.0)
    # Aspect and blade geometry bias a whole track's estimate, so averaging plots does not remove it.
    bias = rng.normal(0, 0.15)
    return np.asarray(signature * fade + bias + rng.normal(0, 0.2, TRACK_STEPS))


def render_radar(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """float32 (TRACK_STEPS, len(FEATURES)) track."""
    velocity = _velocities(scene, rng)
    bearing = rng.uniform(0, 2 * math.pi)
    start = np.array(
        [scene.range_m * math.cos(bearing), scene.range_m * math.sin(bearing), scene.altitude_m], dtype=np.float64
    )
    position = start + np.cumsum(velocity * STEP_SECONDS, axis=0)
    # Plot accuracy: about 0.5% of range in each axis, at least 3 m.
    sigma = max(3.0, 0.005 * scene.range_m)
    measured = position + rng.normal(0, sigma, position.shape)
    measured_velocity = np.gradient(measured, STEP_SECONDS, axis=0)
    # Swerling-like scintillation: the cross-section fluctuates plot to plot by several dB.
    # The per-track offset is the aspect angle (a drone side-on vs head-on differs by several dB).
    rcs = _RCS_DBSM[scene.airframe] + rng.normal(0, 4) + rng.normal(0, 5, TRACK_STEPS)
    track = np.column_stack(
        [
            measured / 1000.0,
            measured_velocity / 50.0,
            _micro_doppler(scene, rng),
            rcs / 10.0,
        ]
    )
    return track.astype(np.float32)
