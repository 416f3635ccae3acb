"""Hand-landmark sequences of signed words: the offline stand-in for a sign-language recording set.

`simulate_sign_language(dest_uri, count, seed)` draws `count` signs and writes them in long form
through rooivalk.storage, one row per frame: sequence_id, label, step and the 63 features
x0, y0, z0, ..., x20, y20, z20 of 21 hand landmarks in the MediaPipe hand layout (landmark 0 the
wrist, then CMC/MCP, PIP/MCP, DIP/IP and tip of thumb, index, middle, ring and pinky), x and y in
normalized image coordinates, z depth on the same scale. A `dest_uri` ending in .parquet or .csv is
the table; any other is a folder that gets sequences.parquet. simulation.json (settings, classes,
feature names, generator version) is written beside the table, before it.

A word (class) is a hand shape (flexion per finger, opening or closing for some words), an
orientation, a wrist path (static, line, arc, circle, zigzag or tap) and a turn of the hand over
time; class k is the same whatever the seed or the number of classes, like a fixed vocabulary.
Every sample varies as signers do: hand size, flexion, a rotation of the whole sign about the
wrist, position, speed (a time warp), length (20 to 40 frames by default) and per-landmark noise.

Deterministic by seed: sample i has its own generator spawned from the seed, so it is the same
whatever `count` is, and a bigger simulation extends a smaller one. Labels cycle through the
classes (sample i is class i mod num_classes), so every class is equally represented.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rooivalk.data.simulators.table_output import table_location, write_simulated_table
from rooivalk.data.source_tables import SIMULATION_META

GENERATOR_VERSION = "sign-language-sim/1"
META_FILE = SIMULATION_META  # the metadata the ingest step reads (and never takes for data)
TABLE_FILE = "sequences.parquet"
LANDMARKS = 21
FEATURES = [f"{axis}{landmark}" for landmark in range(LANDMARKS) for axis in "xyz"]
_CLASS_STREAM = 29_2603  # the vocabulary's own seed: word k never depends on the sample seed
_HAND_SCALE = 0.18  # normalized image units per hand unit (wrist to middle fingertip: 1.8 units)
_PATHS = ("static", "line", "arc", "circle", "zigzag", "tap")
_FLEXION_LEVELS = np.array([0.0, 0.35, 0.7, 1.0])  # extended, bent, hooked, curled

# Per finger (thumb, index, middle, ring, pinky): base landmark relative to the wrist (hand length
# 1, palm in the x-y plane facing -z, fingers along +y), splay angle in the palm plane (radians at
# full spread), and the bone lengths from the base.
_BASES = np.array([[0.18, 0.12, 0.0], [0.25, 0.9, 0.0], [0.08, 0.95, 0.0], [-0.09, 0.9, 0.0], [-0.24, 0.8, 0.0]])
_SPLAY = np.radians([55.0, 10.0, 0.0, -10.0, -22.0])
_BONES = np.array([[0.25, 0.2, 0.18], [0.38, 0.22, 0.18], [0.42, 0.26, 0.19], [0.39, 0.24, 0.18], [0.3, 0.18, 0.16]])
# Joint angles at full flexion (radians): base joint, middle joint, end joint.
_CURL = np.radians(
    [[30.0, 45.0, 70.0], [85.0, 100.0, 70.0], [85.0, 100.0, 70.0], [85.0, 100.0, 70.0], [85.0, 100.0, 70.0]]
)
_THUMB_BEND = np.array([-1.0, 0.2, -0.6])  # the thumb curls across the palm, towards the pinky


def class_names(num_classes: int) -> list[str]:
    """'A'.. for up to 26 classes, otherwise 'word_00', 'word_01', ..."""
    if num_classes <= len(string.ascii_uppercase):
        return list(string.ascii_uppercase[:num_classes])
    width = max(2, len(str(num_classes - 1)))
    return [f"word_{k:0{width}d}" for k in range(num_classes)]


def _rotation(angles: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation Rz @ Ry @ Rx of Euler angles (..., 3) in radians (x, y, z)."""
    cx, cy, cz = np.cos(angles[..., 0]), np.cos(angles[..., 1]), np.cos(angles[..., 2])
    sx, sy, sz = np.sin(angles[..., 0]), np.sin(angles[..., 1]), np.sin(angles[..., 2])
    rows = [
        [cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx],
        [sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx],
        [-sy, cy * sx, cy * cx],
    ]
    return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)


def _axis_angle(axis: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """(T, 3, 3) rotations by angles (T,) about one unit axis (3,) (Rodrigues)."""
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    s, c = np.sin(angles)[:, None, None], np.cos(angles)[:, None, None]
    return np.asarray(np.eye(3) + s * k + (1.0 - c) * (k @ k))


def hand_pose(flexion: np.ndarray, spread: float) -> np.ndarray:
    """(..., 21, 3) landmarks of a hand of length 1 with the wrist at the origin; flexion (..., 5) in
    [0, 1] per finger (0 extended, 1 curled), spread in [0, 1] (fingers together .. splayed)."""
    points = np.zeros((*flexion.shape[:-1], LANDMARKS, 3))
    palm = np.array([0.0, 0.0, -1.0])  # the fingers curl towards the palm side
    for finger in range(5):
        splay = _SPLAY[finger] * (0.4 + 0.6 * spread) if finger else _SPLAY[0]
        along = np.array([np.sin(splay), np.cos(splay), 0.0])
        bend = _THUMB_BEND if finger == 0 else palm
        bend = bend - (bend @ along) * along
        bend /= np.linalg.norm(bend)
        joint = np.broadcast_to(_BASES[finger], points.shape[:-2] + (3,))
        points[..., 1 + 4 * finger, :] = joint
        angle = np.zeros(flexion.shape[:-1] + (1,))
        for bone in range(3):
            angle = angle + flexion[..., finger, None] * _CURL[finger, bone]
            joint = joint + _BONES[finger, bone] * (np.cos(angle) * along + np.sin(angle) * bend)
            points[..., 2 + 4 * finger + bone, :] = joint
    return points


@dataclass(frozen=True)
class SignClass:
    """What makes a word: its hand shape over time, its orientation and how the hand moves."""

    flexion_start: np.ndarray  # (5,)
    flexion_end: np.ndarray  # (5,)
    spread: float
    orientation: np.ndarray  # (3,) Euler angles, radians
    turn_axis: np.ndarray  # (3,) unit
    turn_radians: float
    turn_oscillates: bool
    path: str
    path_direction: np.ndarray  # (3,) unit, mostly in the image plane
    path_amplitude: float  # in hand units
    path_cycles: float


def sign_class(index: int) -> SignClass:
    """Word `index` of the fixed vocabulary. Words 2m and 2m + 1 are a minimal pair: the same hand
    shape (as 'I' and 'J' are), told apart by orientation and movement only."""
    rng = np.random.default_rng([_CLASS_STREAM, index])
    shape = np.random.default_rng([_CLASS_STREAM, index // 2, 1])
    start = shape.choice(_FLEXION_LEVELS, size=5) + shape.uniform(-0.05, 0.05, 5)
    changes = shape.random() < 0.4  # the hand opens or closes during the sign
    end = shape.choice(_FLEXION_LEVELS, size=5) + shape.uniform(-0.05, 0.05, 5) if changes else start
    axis = rng.normal(size=3)
    direction = rng.normal(size=3) * np.array([1.0, 1.0, 0.3])
    return SignClass(
        flexion_start=np.clip(start, 0.0, 1.0),
        flexion_end=np.clip(end, 0.0, 1.0),
        spread=float(shape.uniform(0.0, 1.0)),
        orientation=np.radians(rng.uniform([-35.0, -35.0, -50.0], [35.0, 35.0, 50.0])),
        turn_axis=axis / np.linalg.norm(axis),
        turn_radians=float(np.radians(rng.uniform(0.0, 70.0))),
        turn_oscillates=bool(rng.random() < 0.4),
        path=str(rng.choice(_PATHS)),
        path_direction=direction / np.linalg.norm(direction),
        path_amplitude=float(rng.uniform(0.3, 1.2)),
        path_cycles=float(rng.choice([1.0, 1.5, 2.0])),
    )


def _wrist_path(sign: SignClass, u: np.ndarray) -> np.ndarray:
    """(T, 3) wrist offset in hand units at normalized times u (T,) in [0, 1]."""
    d = sign.path_direction
    normal = np.cross(d, [0.0, 0.0, 1.0]) if abs(d[2]) < 0.9 else np.cross(d, [1.0, 0.0, 0.0])
    normal /= np.linalg.norm(normal)
    phase = 2 * np.pi * sign.path_cycles * u
    along: np.ndarray
    across: np.ndarray
    if sign.path == "line":
        along, across = u, np.zeros_like(u)
    elif sign.path == "arc":
        along, across = np.sin(np.pi * u / 2), 0.5 * np.sin(np.pi * u)
    elif sign.path == "circle":
        along, across = 0.5 * (1 - np.cos(2 * np.pi * u)), 0.5 * np.sin(2 * np.pi * u)
    elif sign.path == "zigzag":
        along, across = u, 0.25 * np.sin(phase)
    elif sign.path == "tap":
        along, across = 0.4 * np.abs(np.sin(phase)), np.zeros_like(u)
    else:  # static: the hand holds its place
        along, across = np.zeros_like(u), np.zeros_like(u)
    return np.asarray(sign.path_amplitude * (along[:, None] * d + across[:, None] * normal))


def render_sign(sign: SignClass, rng: np.random.Generator, min_length: int = 20, max_length: int = 40) -> np.ndarray:
    """float32 (T, 21, 3) landmarks of one signer signing `sign`, T in [min_length, max_length]."""
    length = int(rng.integers(min_length, max_length + 1))
    scale = _HAND_SCALE * rng.uniform(0.85, 1.15)  # hand size
    warp = float(np.exp(rng.normal(0.0, 0.4)))  # speed: faster or slower early in the sign
    u = np.linspace(0.0, 1.0, length) ** warp
    jitter = rng.normal(0.0, 0.12, 5)
    posture = np.radians(rng.normal(0.0, 22.0, 3))  # the signer's own rotation of the whole sign
    origin = np.array([0.5, 0.55, 0.0]) + rng.uniform([-0.12, -0.12, -0.03], [0.12, 0.12, 0.03])
    amplitude = rng.uniform(0.75, 1.25)
    flexion = np.clip(
        sign.flexion_start + (sign.flexion_end - sign.flexion_start) * u[:, None] + jitter, 0.0, 1.0
    )  # (T, 5)
    hands = hand_pose(flexion, sign.spread)  # (T, 21, 3), wrist at the origin
    turn = sign.turn_radians * (np.sin(2 * np.pi * u) if sign.turn_oscillates else u)
    rotations = _rotation(sign.orientation) @ _axis_angle(sign.turn_axis, turn)  # (T, 3, 3)
    hands = np.einsum("tij,tlj->tli", rotations, hands) + amplitude * _wrist_path(sign, u)[:, None, :]
    # The signer's posture turns the whole sign about the wrist's first position.
    points = scale * np.einsum("ij,tlj->tli", _rotation(posture), hands) + origin
    points += rng.normal(0.0, 0.008, points.shape)
    return np.asarray(points, dtype=np.float32)


def simulation_settings(count: int, seed: int, num_classes: int, min_length: int, max_length: int) -> dict[str, object]:
    """What decides the simulated signs: written to simulation.json."""
    return {"generator": GENERATOR_VERSION, "count": count, "seed": seed, "num_classes": num_classes,
            "min_length": min_length, "max_length": max_length}  # fmt: skip


@dataclass(frozen=True)
class SignSimulationResult:
    table_uri: str
    meta_uri: str
    count: int
    class_counts: dict[str, int]
    rows: int


def simulate_sign_language(
    dest_uri: str,
    count: int,
    seed: int = 0,
    num_classes: int = 26,
    min_length: int = 20,
    max_length: int = 40,
    progress: Callable[[int, int], None] | None = None,
) -> SignSimulationResult:
    """Simulate `count` signed words and write them in long form (the table last, so a reader never
    sees a table without its simulation.json)."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if count < num_classes:
        raise ValueError(f"count must be at least num_classes ({num_classes}, one sample per class), got {count}")
    if not 2 <= min_length <= max_length:
        raise ValueError(f"need 2 <= min_length <= max_length, got {min_length} and {max_length}")
    table_uri, _ = table_location(dest_uri, TABLE_FILE)
    names = class_names(num_classes)
    signs = [sign_class(k) for k in range(num_classes)]
    frames: list[pd.DataFrame] = []
    # One child stream per sample: sample i does not depend on how many samples follow it.
    for index, child in enumerate(np.random.SeedSequence(seed).spawn(count)):
        label = index % num_classes
        points = render_sign(signs[label], np.random.default_rng(child), min_length, max_length)
        frame = pd.DataFrame(points.reshape(len(points), -1), columns=FEATURES)
        frame.insert(0, "step", np.arange(len(points)))
        frame.insert(0, "label", names[label])
        frame.insert(0, "sequence_id", f"sign{seed:04d}-{index:06d}")
        frames.append(frame)
        if progress is not None:
            progress(index + 1, count)
    table = pd.concat(frames, ignore_index=True)
    meta = {
        **simulation_settings(count, seed, num_classes, min_length, max_length),
        "classes": names,
        "landmarks": LANDMARKS,
        "features": FEATURES,
    }
    meta_uri = write_simulated_table(table_uri, table, meta)
    counts = {name: count // num_classes + (k < count % num_classes) for k, name in enumerate(names)}
    return SignSimulationResult(table_uri, meta_uri, count, counts, len(table))
