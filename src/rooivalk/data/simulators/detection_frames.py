"""Synthetic object-detection frames as a YOLO folder, so the demo plans and CI train detectors offline.

`simulate_detection_frames(output_dir, kind, images, width, height, seed)` writes what
rooivalk.data.detection_yolo.read_yolo reads:

    images/[<split>/]<index>.png   RGB frames; <split>/ (train, val, test) only when `splits` is given
    labels/[<split>/]<index>.txt   one `class cx cy w h` line (normalized) per object; empty for a negative
    data.yaml                      names (a list: the class id is the position), nc, the split folders

kind "counter_drone": quadcopter drones, birds and aircraft as dark silhouettes on a tinted sky (the
optical simulator's drawings), hazed, sometimes motion-blurred, with sensor noise. kind "shapes": flat
coloured circles, squares and triangles on a noisy textured background, learnable in a minute on a CPU.
A box is the clipped extent of its object's drawn pixels, not of the intended size, so labels stay exact
for objects cut by the frame's edge. The same arguments write byte-identical files.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from PIL import Image, ImageDraw
from scipy import ndimage

from rooivalk.data.simulators.optical import SUPERSAMPLE, _draw_bird, _draw_plane, _draw_quadcopter, motion_blur_kernel

CLASSES = {"counter_drone": ["drone", "bird", "aircraft"], "shapes": ["circle", "square", "triangle"]}
SPLITS = ("train", "val", "test")
MIN_COVERAGE = 0.05  # fainter anti-aliased edge pixels are not drawn: every drawn pixel is inside the box
MIN_VISIBLE = 0.5  # an object cut by the frame's edge keeps this share of its pixels, or is placed again
MAX_OVERLAP = 0.25  # the most of an object's box that a later object may cover
MAX_SPAN = 0.4  # the largest object spans this share of the frame's shorter side
_TRIES = 20  # placements tried per object before it is left out

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels, end-exclusive
Draw = Callable[[ImageDraw.ImageDraw, float, float, float], None]  # (draw, cx, cy, span) in canvas pixels
Placed = tuple[int, np.ndarray, Box]  # class id, (H, W) coverage in [0, 1], box
Labelled = tuple[int, Box]  # class id, box
Splits = tuple[float, float, float] | None  # train, val, test fractions


def simulate_detection_frames(
    output_dir: str | Path,
    kind: Literal["counter_drone", "shapes"],
    images: int,
    width: int,
    height: int,
    seed: int,
    max_objects: int = 3,
    negatives: float = 0.1,
    splits: Splits = None,
) -> dict[str, Any]:
    """Write `images` frames and their labels under `output_dir`: a `negatives` share without objects, the
    rest with 1..max_objects; `splits` (train, val, test fractions) gives split sub-folders. Returns the
    kind, image, negative and per-class box counts, and the images per split (None: no splits)."""
    _check(kind, images, width, height, max_objects, negatives, splits)
    root = Path(output_dir)
    for folder in (root / "images", root / "labels"):
        if folder.exists():
            raise FileExistsError(f"{folder} exists; simulate_detection_frames writes into a fresh folder")
    names = CLASSES[kind]
    rng = np.random.default_rng(seed)
    negative = np.zeros(images, dtype=bool)
    negative[rng.permutation(images)[: round(negatives * images)]] = True
    split_of = _assign_splits(rng, images, splits)
    render = _render_sky if kind == "counter_drone" else _render_shapes
    boxes = dict.fromkeys(names, 0)
    # Frame i has its own generator, so its content does not depend on the other frames.
    for index, child in enumerate(np.random.SeedSequence(seed).spawn(images)):
        frame_rng = np.random.default_rng(child)
        count = 0 if negative[index] else int(frame_rng.integers(1, max_objects + 1))
        pixels, placed = render(frame_rng, width, height, count)
        stem = Path(split_of[index]) / f"{index:06d}"
        image_path, label_path = root / "images" / f"{stem}.png", root / "labels" / f"{stem}.txt"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        label_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(image_path)
        label_path.write_text("".join(_label_line(class_id, box, width, height) for class_id, box in placed))
        for class_id, _ in placed:
            boxes[names[class_id]] += 1
    (root / "data.yaml").write_text(yaml.safe_dump(_data_yaml(names, split_of), sort_keys=False))
    per_split = {name: split_of.count(name) for name in SPLITS} if splits is not None else None
    return {"kind": kind, "images": images, "negatives": int(negative.sum()), "boxes": boxes, "splits": per_split}


def _check(kind: str, images: int, width: int, height: int, max_objects: int, negatives: float, splits: Splits) -> None:
    if kind not in CLASSES:
        raise ValueError(f"kind must be one of {sorted(CLASSES)}, got {kind!r}")
    if images < 1 or max_objects < 1:
        raise ValueError(f"images and max_objects must be at least 1, got {images} and {max_objects}")
    if min(width, height) < 32:
        raise ValueError(f"frames must be at least 32x32 pixels, got {width}x{height}")
    if not 0 <= negatives <= 1:
        raise ValueError(f"negatives is a share in [0, 1], got {negatives}")
    if splits is not None and (len(splits) != 3 or min(splits) < 0 or not math.isclose(sum(splits), 1.0)):
        raise ValueError(f"splits are three non-negative (train, val, test) fractions summing to 1, got {splits}")


def _assign_splits(rng: np.random.Generator, images: int, splits: Splits) -> list[str]:
    """Each image's split folder ("" without splits); the counts are the rounded fractions, train the rest."""
    if splits is None:
        return [""] * images
    val = round(splits[1] * images)
    test = min(round(splits[2] * images), images - val)  # 3 x (0, .5, .5) rounds to 2 + 2
    names = ["train"] * (images - val - test) + ["val"] * val + ["test"] * test
    return [names[position] for position in np.argsort(rng.permutation(images))]


def _data_yaml(names: list[str], split_of: list[str]) -> dict[str, Any]:
    # Ultralytics reads the split folders from train/val/test; rooivalk's reader reads the folders themselves.
    folders = {name: f"images/{name}" for name in SPLITS if name in split_of}
    return {"names": names, "nc": len(names), **folders}


def _label_line(class_id: int, box: Box, width: int, height: int) -> str:
    x1, y1, x2, y2 = box
    cx, cy, w, h = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height
    return f"{class_id} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n"


def _place(
    rng: np.random.Generator, draw: Draw, span: float, width: int, height: int, supersample: int, blur: int
) -> tuple[np.ndarray, Box] | None:
    """(H, W) coverage of one object centred at a random point and the box of its drawn pixels, or None
    when less than MIN_VISIBLE of it falls inside the frame. `blur`: motion-blur length (0: none)."""
    margin = 2 + blur
    side = math.ceil(1.5 * span) + 2 * margin  # a local patch that holds any drawing of this span rotated
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    left, top = math.floor(cx) - side // 2, math.floor(cy) - side // 2
    canvas = Image.new("L", (side * supersample, side * supersample), 0)
    draw(ImageDraw.Draw(canvas), (cx - left) * supersample, (cy - top) * supersample, span * supersample)
    if supersample > 1:  # box-downsampling anti-aliases: coverage is the share of each pixel drawn
        canvas = canvas.resize((side, side), Image.Resampling.BOX)
    patch = np.asarray(canvas, dtype=np.float64) / 255.0  # (side, side)
    if blur:
        patch = ndimage.convolve(patch, motion_blur_kernel(blur, rng.uniform(0, 2 * math.pi)), mode="constant")
    patch[patch < MIN_COVERAGE] = 0.0
    x1, y1, x2, y2 = max(left, 0), max(top, 0), min(left + side, width), min(top + side, height)
    if x1 >= x2 or y1 >= y2:
        return None
    visible = patch[y1 - top : y2 - top, x1 - left : x2 - left]
    if not visible.any() or visible.sum() < MIN_VISIBLE * patch.sum():
        return None
    rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
    coverage = np.zeros((height, width))
    coverage[y1:y2, x1:x2] = visible
    return coverage, (x1 + int(cols[0]), y1 + int(rows[0]), x1 + int(cols[-1]) + 1, y1 + int(rows[-1]) + 1)


def _covered(box: Box, by: Box) -> float:
    """The share of `box` that `by` covers."""
    w = min(box[2], by[2]) - max(box[0], by[0])
    h = min(box[3], by[3]) - max(box[1], by[1])
    return max(w, 0) * max(h, 0) / ((box[2] - box[0]) * (box[3] - box[1]))


def _scatter(
    rng: np.random.Generator,
    width: int,
    height: int,
    count: int,
    pick: Callable[[np.random.Generator], tuple[int, Draw]],
    min_span: float,
    supersample: int,
    blur_share: float,
) -> list[Placed]:
    """Up to `count` objects from `pick` (class id, drawing), sizes log-uniform from `min_span` pixels to
    MAX_SPAN of the shorter side; none covers more than MAX_OVERLAP of an earlier one's box or vice versa."""
    low, high = math.log(min_span), math.log(max(min_span, MAX_SPAN * min(width, height)))
    placed: list[Placed] = []
    for _ in range(count):
        for _ in range(_TRIES):
            class_id, draw = pick(rng)
            span = math.exp(rng.uniform(low, high))
            blur = int(rng.integers(2, 6)) if rng.random() < blur_share else 0
            item = _place(rng, draw, span, width, height, supersample, blur)
            if item is None:
                continue
            box = item[1]
            if all(_covered(other, box) <= MAX_OVERLAP and _covered(box, other) <= MAX_OVERLAP for *_, other in placed):
                placed.append((class_id, *item))
                break
    return placed


def _pick_flyer(rng: np.random.Generator) -> tuple[int, Draw]:
    """drone (a quadcopter), bird (flapping, near level) or aircraft (straight or swept wings)."""
    class_id, angle = int(rng.integers(3)), rng.uniform(0, 2 * math.pi)
    if class_id == 0:
        return 0, lambda draw, x, y, span: _draw_quadcopter(draw, x, y, span, angle, 255)
    if class_id == 1:
        bank, phase = rng.normal(0, 0.35), rng.uniform(0, 2 * math.pi)
        return 1, lambda draw, x, y, span: _draw_bird(draw, x, y, span, bank, 255, phase)
    swept = rng.uniform(0, 0.15)
    return 2, lambda draw, x, y, span: _draw_plane(draw, x, y, span, angle, 255, swept)


def _sky(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """(H, W) float sky: a vertical gradient, smooth cloud texture, sometimes a ground band along the bottom
    (optical._background's recipe for a non-square frame)."""
    short = min(width, height)
    gradient = 170 + 45 * np.linspace(0, 1, height)[:, None] + rng.normal(0, 12)
    clouds = ndimage.gaussian_filter(rng.normal(0, 1, (height, width)), sigma=short / 10)
    image = gradient + clouds / clouds.std() * rng.uniform(2, 10)
    if rng.random() < 0.3:  # tree line / buildings
        ground = 90 + ndimage.gaussian_filter(rng.normal(0, 25, (height, width)), sigma=1.5)
        ridge = height * rng.uniform(0.65, 0.92) + ndimage.gaussian_filter(rng.normal(0, short / 12, width), short / 20)
        image = np.where(np.arange(height)[:, None] >= ridge[None, :], ground, image)
    return np.asarray(image, dtype=np.float64)


def _render_sky(rng: np.random.Generator, width: int, height: int, count: int) -> tuple[np.ndarray, list[Labelled]]:
    image = _sky(rng, width, height)
    placed = _scatter(rng, width, height, count, _pick_flyer, 6.0, SUPERSAMPLE, blur_share=0.25)
    for _, coverage, _ in placed:
        # Backlit: dark; haze takes part of the contrast away.
        ink, contrast = rng.uniform(15, 80), rng.uniform(0.5, 1.0)
        image = image * (1 - coverage * contrast) + ink * coverage * contrast
    image = image + rng.normal(0, 4, image.shape)  # sensor noise
    tint = np.asarray([0.8, 0.89, 1.0]) + rng.normal(0, 0.03, 3)  # a bluish sky, (3,)
    pixels = np.clip(np.rint(image[:, :, None] * tint), 0, 255).astype(np.uint8)  # (H, W, 3)
    return pixels, [(class_id, box) for class_id, _, box in placed]


def _pick_shape(rng: np.random.Generator) -> tuple[int, Draw]:
    class_id, angle = int(rng.integers(3)), rng.uniform(0, 2 * math.pi)
    if class_id == 0:
        return 0, lambda draw, x, y, span: draw.ellipse((x - span / 2, y - span / 2, x + span / 2, y + span / 2), 255)
    # A square of side 0.8 span or a triangle of side ~1.04 span: radius is the centre-corner distance.
    corners, radius = (4, 0.8 / math.sqrt(2)) if class_id == 1 else (3, 0.6)
    points = [(math.cos(angle + 2 * math.pi * k / corners), math.sin(angle + 2 * math.pi * k / corners))
              for k in range(corners)]  # fmt: skip
    return class_id, lambda draw, x, y, span: draw.polygon(
        [(x + radius * span * u, y + radius * span * v) for u, v in points], fill=255
    )


def _render_shapes(rng: np.random.Generator, width: int, height: int, count: int) -> tuple[np.ndarray, list[Labelled]]:
    base = rng.uniform(40, 215, 3)  # the background's colour, (3,)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (height, width, 3)), sigma=(4, 4, 0))
    image = base + texture / texture.std() * 12 + rng.normal(0, 6, (height, width, 3))  # (H, W, 3)
    # Exact-pixel masks (no supersampling, no blur); each shape one flat colour far from the background.
    placed = _scatter(rng, width, height, count, _pick_shape, 8.0, 1, blur_share=0.0)
    for _, coverage, _ in placed:
        colour = rng.integers(0, 256, 3)
        while np.linalg.norm(colour - base) < 120:
            colour = rng.integers(0, 256, 3)
        image = np.where(coverage[:, :, None] > 0, colour, image)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), [(class_id, box) for class_id, _, box in placed]
