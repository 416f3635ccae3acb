"""Optical sensor: a grayscale camera chip of the object over sky or ground clutter.

The object is drawn as a dark silhouette at 4x resolution and box-downsampled (anti-aliasing for
free), so at long range a drone is a one- or two-pixel smudge, much like a distant bird. Fixed-wing
drones and airliners share a silhouette and differ only in size, which range hides. Fog removes
contrast with range; rain adds bright streaks; fast objects smear (motion blur).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from rooivalk.data.simulators.scene import FOCAL_PX_PER_KM, SPAN_M, Scene

SUPERSAMPLE = 4
FRAME_PX = 128  # the camera frame's width in pixels, for which FOCAL_PX_PER_KM is given


def _rotate(
    points: list[tuple[float, float]], angle: float, cx: float, cy: float, scale: float
) -> list[tuple[float, float]]:
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + scale * (x * c - y * s), cy + scale * (x * s + y * c)) for x, y in points]


def _draw_quadcopter(draw: ImageDraw.ImageDraw, cx: float, cy: float, span: float, angle: float, ink: int) -> None:
    # Unit drawing spans [-0.5, 0.5]: two crossed arms and four rotor discs at their ends.
    width = max(1.0, span * 0.08)
    for arm in (math.pi / 4, 3 * math.pi / 4):
        ends = _rotate([(-0.5 * math.cos(arm), -0.5 * math.sin(arm)), (0.5 * math.cos(arm), 0.5 * math.sin(arm))],
                       angle, cx, cy, span * 0.8)  # fmt: skip
        draw.line(ends, fill=ink, width=int(width))
        for x, y in ends:
            r = span * 0.14
            draw.ellipse((x - r, y - r, x + r, y + r), fill=ink)
    r = span * 0.12
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=ink)


def _draw_plane(
    draw: ImageDraw.ImageDraw, cx: float, cy: float, span: float, angle: float, ink: int, swept: float
) -> None:
    fuselage = [(-0.06 * 0.5, -0.5), (0.06 * 0.5, -0.5), (0.03, 0.5), (-0.03, 0.5)]
    wing = [(-0.5, 0.05 + swept), (0.5, 0.05 + swept), (0.05, -0.08), (-0.05, -0.08)]
    tail = [(-0.16, 0.42), (0.16, 0.42), (0.03, 0.32), (-0.03, 0.32)]
    for part in (fuselage, wing, tail):
        draw.polygon(_rotate(part, angle, cx, cy, span), fill=ink)


def _draw_bird(
    draw: ImageDraw.ImageDraw, cx: float, cy: float, span: float, angle: float, ink: int, phase: float
) -> None:
    lift = 0.35 * math.sin(phase)  # wings up, level or down
    points = [(-0.5, -lift), (-0.2, -0.05), (0.0, 0.05), (0.2, -0.05), (0.5, -lift)]
    draw.line(_rotate(points, angle, cx, cy, span), fill=ink, width=max(1, int(span * 0.1)))


def _background(size: int, scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """(size, size) float sky: a vertical gradient, smooth cloud texture, sometimes a ground band."""
    rows = np.linspace(0, 1, size)[:, None]
    sky = 175 + 45 * rows + rng.normal(0, 1, (1, 1)) * 15
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), sigma=size / 10) * size / 2.5
    image = np.broadcast_to(sky, (size, size)) + texture
    if rng.random() < 0.35:  # ground clutter: tree line / buildings along the bottom
        horizon = int(size * rng.uniform(0.6, 0.9))
        ground = 90 + ndimage.gaussian_filter(rng.normal(0, 25, (size, size)), sigma=1.5)
        ridge = (horizon + ndimage.gaussian_filter(rng.normal(0, size / 12, size), sigma=size / 20)).astype(int)
        below = np.arange(size)[:, None] >= ridge[None, :]
        image = np.where(below, ground, image)
    return np.asarray(image, dtype=np.float64)


def _silhouette(scene: Scene, size: int, rng: np.random.Generator, field_px: int) -> np.ndarray:
    """Coverage in [0, 1] at the output size: how much of each pixel the object hides."""
    big = size * SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    span = SPAN_M[scene.airframe] * FOCAL_PX_PER_KM / scene.range_m * SUPERSAMPLE * size / field_px
    span = min(span, big * 0.8)
    cx, cy = big * rng.uniform(0.3, 0.7), big * rng.uniform(0.25, 0.6)
    if scene.airframe in ("quadcopter", "quadcopter_large"):
        _draw_quadcopter(draw, cx, cy, span, scene.pose_rad, 255)
    elif scene.airframe in ("fixed_wing", "aircraft"):
        _draw_plane(draw, cx, cy, span, scene.pose_rad, 255, swept=0.0 if scene.airframe == "fixed_wing" else 0.12)
    elif scene.airframe == "bird":
        _draw_bird(draw, cx, cy, span, scene.pose_rad * 0.3, 255, rng.uniform(0, 2 * math.pi))
    elif scene.airframe == "flock":
        for _ in range(int(rng.integers(3, 9))):
            x, y = cx + rng.normal(0, span / 3), cy + rng.normal(0, span / 5)
            _draw_bird(draw, x, y, span / 6, rng.normal(0, 0.3), 255, rng.uniform(0, 2 * math.pi))
    elif scene.airframe == "balloon":
        r = span / 2
        draw.ellipse((cx - r, cy - r * 1.2, cx + r, cy + r * 1.2), fill=180)
    coverage = np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.float64) / 255.0
    return coverage


def blur_length(scene: Scene) -> int | None:
    """Pixels a fast (> 15 m/s) or evasive target smears over during the exposure; None: no blur."""
    if scene.speed_mps > 15 or scene.motion == "evasive":
        return int(min(7, 2 + scene.speed_mps / 30))
    return None


def motion_blur_kernel(length: int, heading_rad: float, samples: int = 32) -> np.ndarray:
    """(k, k) kernel, k odd, summing to 1: a `length`-pixel line through the centre along the heading.

    Points along the line spread bilinear weights onto the pixel grid, so every heading keeps the
    kernel's mass. (Rotating a drawn line with ndimage.rotate instead loses all of it for a 2-pixel
    line at most angles: the convolution then blanks the chip, as counter-drone-sim/1 did.) Not
    `training.augment.line_kernel`: most simulated blurs are 2 pixels long, where its rounded binary
    line is a 2x2 block that shifts the chip by half a pixel; sub-pixel weights on an odd grid keep
    the smear centred and as short as the motion."""
    half = (length - 1) / 2
    size = 2 * math.ceil(half) + 1
    kernel = np.zeros((size, size))
    centre = size // 2
    for t in np.linspace(-half, half, samples):
        x, y = centre + t * math.cos(heading_rad), centre + t * math.sin(heading_rad)
        x0, y0 = math.floor(x), math.floor(y)
        fx, fy = x - x0, y - y0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                if 0 <= y0 + dy < size and 0 <= x0 + dx < size:
                    kernel[y0 + dy, x0 + dx] += wy * wx
    return np.asarray(kernel / kernel.sum())


def render_optical(scene: Scene, rng: np.random.Generator, size: int = 32, field_px: int = FRAME_PX) -> np.ndarray:
    """uint8 (size, size) grayscale chip of the scene: `field_px` pixels of the camera's frame (at the
    focal length of FOCAL_PX_PER_KM) shown at `size` pixels. The default shows the whole 128 px frame
    scaled down; `field_px=size` is a crop around the target at the camera's own resolution (what a
    tracker that cuts chips out of the full frame sees: objects 128 / size times larger)."""
    image = _background(size, scene, rng)
    if scene.airframe == "cloud":
        blob = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), sigma=size / 6)
        image = image + np.clip(blob * size * 4, -60, 25)
    coverage = _silhouette(scene, size, rng, field_px)
    target = rng.uniform(20, 70)  # the object's own brightness (backlit: dark)
    # Fog: the object's contrast against the sky decays with range through the haze.
    contrast = math.exp(-scene.range_m / scene.visibility_m)
    image = image * (1 - coverage * contrast) + target * coverage * contrast
    length = blur_length(scene)
    if length is not None:  # the object smears along its heading
        image = ndimage.convolve(image, motion_blur_kernel(length, scene.heading_rad), mode="nearest")
    if scene.weather == "fog":
        haze = 1 - math.exp(-300.0 / scene.visibility_m)
        image = image * (1 - haze) + 200 * haze
    if scene.weather == "rain":
        streaks = np.zeros((size, size))
        for _ in range(int(rng.integers(size // 2, size * 2))):
            x, y = int(rng.integers(0, size)), int(rng.integers(0, size))
            length = int(rng.integers(3, 8))
            for k in range(length):
                if 0 <= y + k < size and 0 <= x + k // 3 < size:
                    streaks[y + k, x + k // 3] = rng.uniform(25, 60)
        image = image + streaks
    image = image + rng.normal(0, 6, image.shape)  # sensor noise
    return np.clip(image, 0, 255).astype(np.uint8)
