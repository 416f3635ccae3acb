"""Acoustic sensor: a short microphone clip at 16 kHz.

Sources: quadcopters hum at the blade-pass frequency (rotor rpm x blades) with a comb of harmonics
and a high motor whine; fixed-wing electric drones have one lower propeller tone with few
harmonics; birds chirp (fast upward or downward sweeps at 2-6 kHz, many overlapping for a flock);
aircraft rumble (low-passed broadband noise with a turbine tone); everything sits on background
noise and wind. Sound falls 20 dB per decade of range and wind noise grows with the square of wind
speed, so a far or windy drone is masked and sounds like clutter.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal as sps

from rooivalk.data.simulators.scene import Scene

SAMPLE_RATE = 16000
CLIP_SAMPLES = 4096  # 0.256 s: four CREPE frames of 1024 samples
_LEVEL_AT_100M = {  # source amplitude at 100 m, relative to background noise of 0.01
    "quadcopter": 0.05, "quadcopter_large": 0.08, "fixed_wing": 0.06, "bird": 0.05, "flock": 0.07,
    "aircraft": 3.0, "cloud": 0.0, "balloon": 0.0, "empty": 0.0,
}  # fmt: skip


def _time() -> np.ndarray:
    return np.arange(CLIP_SAMPLES) / SAMPLE_RATE


def _harmonics(rng: np.random.Generator, fundamental: float, count: int, decay: float) -> np.ndarray:
    t = _time()
    wobble = 1 + 0.01 * np.sin(2 * math.pi * rng.uniform(2, 8) * t)  # rpm regulation
    clip = np.zeros(CLIP_SAMPLES)
    for k in range(1, count + 1):
        if fundamental * k > SAMPLE_RATE / 2:
            break
        phase = 2 * math.pi * fundamental * k * np.cumsum(wobble) / SAMPLE_RATE
        clip += np.sin(phase + rng.uniform(0, 2 * math.pi)) / k**decay
    return clip / math.sqrt(count)


def _quadcopter(rng: np.random.Generator, large: bool) -> np.ndarray:
    blade_pass = rng.uniform(90, 160) if large else rng.uniform(150, 320)
    whine = 0.3 * np.sin(2 * math.pi * rng.uniform(3000, 6000) * _time())
    return _harmonics(rng, blade_pass, 14, 0.7) + whine


def _fixed_wing(rng: np.random.Generator) -> np.ndarray:
    return _harmonics(rng, rng.uniform(60, 120), 5, 1.2) + 0.15 * np.sin(
        2 * math.pi * rng.uniform(7000, 8000) * _time()
    )


def _chirps(rng: np.random.Generator, count: int) -> np.ndarray:
    clip = np.zeros(CLIP_SAMPLES)
    for _ in range(count):
        length = int(rng.integers(300, 1200))
        start = int(rng.integers(0, CLIP_SAMPLES - length))
        f0, f1 = rng.uniform(2000, 6000, 2)
        t = np.arange(length) / SAMPLE_RATE
        sweep = sps.chirp(t, f0=f0, f1=f1, t1=t[-1], method="quadratic")
        clip[start : start + length] += sweep * np.hanning(length)
    return clip


def _lowpass_noise(rng: np.random.Generator, cutoff_hz: float, order: int = 4) -> np.ndarray:
    sos = sps.butter(order, cutoff_hz, fs=SAMPLE_RATE, output="sos")
    noise = sps.sosfilt(sos, rng.normal(size=CLIP_SAMPLES + 512))[512:]
    return np.asarray(noise / (noise.std() + 1e-12))


def _source(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    if scene.airframe in ("quadcopter", "quadcopter_large"):
        return _quadcopter(rng, large=scene.airframe == "quadcopter_large")
    if scene.airframe == "fixed_wing":
        return _fixed_wing(rng)
    if scene.airframe == "bird":
        return (
            _chirps(rng, int(rng.integers(1, 3)))
            if scene.motion == "flap" or rng.random() < 0.5
            else np.zeros(CLIP_SAMPLES)
        )
    if scene.airframe == "flock":
        return _chirps(rng, int(rng.integers(3, 9)))
    if scene.airframe == "aircraft":
        return _lowpass_noise(rng, 400.0) + 0.2 * np.sin(2 * math.pi * rng.uniform(1000, 3000) * _time())
    return np.zeros(CLIP_SAMPLES)


def render_acoustic(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """float32 (CLIP_SAMPLES,) clip in [-1, 1]."""
    level = _LEVEL_AT_100M[scene.airframe] * 100.0 / max(scene.range_m, 10.0)
    source = _source(scene, rng)
    background = 0.01 * (rng.normal(size=CLIP_SAMPLES) + _lowpass_noise(rng, 1500.0))
    wind = 0.0008 * scene.wind_mps**2 * _lowpass_noise(rng, 250.0, order=2)
    if rng.random() < 0.2:  # a passing car or a door: a broadband transient
        transient = np.zeros(CLIP_SAMPLES)
        start = int(rng.integers(0, CLIP_SAMPLES - 800))
        transient[start : start + 800] = _lowpass_noise(rng, 2000.0)[:800] * np.hanning(800) * 0.05
        background = background + transient
    clip = level * source + background + wind
    return np.asarray(np.clip(clip, -1.0, 1.0), dtype=np.float32)
