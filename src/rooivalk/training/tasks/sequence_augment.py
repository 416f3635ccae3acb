"""Seeded augmentations of padded sequence batches: (B, T, F) float features with lengths (B,).

Each effect acts on a sample with probability `probability` (a stage may lower it for its last
phase): a rotation of the hand about the wrist, a scaling about the wrist, a translation, Gaussian
noise and a time shift. Rotation and the wrist-centred scaling need to know where the landmarks
are: `landmark_layout` finds 21 x 3 hand landmarks (MediaPipe order, wrist = landmark 0) among the
feature names x0, y0, z0, ..., z20. Without that layout there is no rotation, scaling is about zero
and the translation is one offset per feature. Augment raw features (landmark coordinates, before
standardization): translation and noise are in the features' own units.

Every number is drawn from the caller's generator in one fixed order, whatever the probability or
the data, so a resumed run replays the same augmented batches. Frames past a sample's length come
out edge-padded (copies of its last valid frame) in every sample an effect acted on; a sample no
effect acted on comes back unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

LANDMARKS = 21
_AXES = "xyz"
_NAME = re.compile(r"^([xyz])_?(\d+)$", re.IGNORECASE)
_EFFECTS = 5  # rotation, scale, translation, noise, time shift: one chance per sample each


@dataclass(frozen=True)
class SequenceAugmentSettings:
    probability: float = 0.5  # of each effect, per sample
    rotation_degrees: float = 15.0  # about each axis, uniform in +-
    scale: tuple[float, float] = (0.9, 1.1)
    translation: float = 0.05  # per axis (per feature without a landmark layout), uniform in +-
    noise_std: float = 0.01
    time_shift: float = 0.1  # largest shift, as a fraction of the sample's length

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {self.probability}")
        if not 0.0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {self.scale}")
        negative = [name for name in ("rotation_degrees", "translation", "noise_std") if getattr(self, name) < 0]
        if negative:
            raise ValueError(f"{', '.join(negative)} must not be negative")
        if not 0.0 <= self.time_shift < 1.0:
            raise ValueError(f"time_shift must be in [0, 1), got {self.time_shift}")


def landmark_layout(feature_names: Sequence[str], required: bool = False) -> torch.Tensor | None:
    """(21, 3) column indices of landmark j's x, y, z when the features hold exactly one hand of 21
    landmarks named x0..z20 (or x_0..z_20, any case; other features may sit beside them), else None.
    A set with landmark numbers beyond 20 (a body pose, two hands) is not a hand. `required=True`
    (the plan declares the layout) raises instead of returning None, naming what is missing."""
    found: dict[tuple[int, int], int] = {}
    beyond: list[str] = []
    for column, name in enumerate(feature_names):
        match = _NAME.match(name)
        if match is None:
            continue
        landmark = int(match.group(2))
        if landmark >= LANDMARKS:
            beyond.append(name)
        found.setdefault((landmark, _AXES.index(match.group(1).lower())), column)
    wanted = [(landmark, axis) for landmark in range(LANDMARKS) for axis in range(3)]
    missing = [f"{_AXES[axis]}{landmark}" for landmark, axis in wanted if (landmark, axis) not in found]
    if missing or beyond:
        if required:
            problems = [f"missing {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}"] if missing else []
            problems += [f"landmarks beyond {LANDMARKS - 1}: {', '.join(beyond[:6])}"] if beyond else []
            raise ValueError(f"features are not a {LANDMARKS} x 3 hand landmark layout: {'; '.join(problems)}")
        return None
    return torch.tensor([found[key] for key in wanted]).reshape(LANDMARKS, 3)


def rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) rotations Rz @ Ry @ Rx of Euler angles (B, 3) in radians (about x, y, z)."""
    cos, sin = angles.cos().unbind(-1), angles.sin().unbind(-1)
    cx, cy, cz = cos
    sx, sy, sz = sin
    rows = [
        [cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx],
        [sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx],
        [-sy, cy * sx, cy * cx],
    ]
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


@dataclass(frozen=True)
class _Draws:
    """Every number one batch needs, drawn in this order: chances (B, 5), angles (B, 3), scale (B,),
    offsets (B, 3 or F), noise (B, T, F), shift (B,); each uniform in [0, 1) except the noise."""

    chances: torch.Tensor
    angles: torch.Tensor
    scale: torch.Tensor
    offsets: torch.Tensor
    noise: torch.Tensor
    shift: torch.Tensor


def _draw(shape: torch.Size, offset_width: int, generator: torch.Generator, device: torch.device) -> _Draws:
    batch, steps, features = shape
    on = generator.device

    def uniform(*size: int) -> torch.Tensor:
        return torch.rand(size, generator=generator, device=on).to(device)

    chances, angles, scale = uniform(batch, _EFFECTS), uniform(batch, 3), uniform(batch)
    offsets = uniform(batch, offset_width)
    noise = torch.randn((batch, steps, features), generator=generator, device=on).to(device)
    return _Draws(chances, angles, scale, offsets, noise, uniform(batch))


class SequenceAugment:
    """`__call__(batch (B, T, F), lengths (B,), generator) -> augmented batch, same shape`.
    `layout` is `landmark_layout(feature_names)`; with None there is no rotation, scaling is about
    zero and the translation is one offset per feature."""

    def __init__(self, settings: SequenceAugmentSettings, layout: torch.Tensor | None = None) -> None:
        if layout is not None and tuple(layout.shape) != (LANDMARKS, 3):
            raise ValueError(f"layout must be ({LANDMARKS}, 3) column indices, got {tuple(layout.shape)}")
        self.settings = settings
        self.layout = layout

    def with_probability(self, probability: float) -> SequenceAugment:
        """The same augmentation at another probability (a stage's last phase augments less)."""
        return SequenceAugment(replace(self.settings, probability=probability), self.layout)

    def __call__(self, batch: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if batch.ndim != 3 or lengths.shape != batch.shape[:1]:
            raise ValueError(f"want batch (B, T, F) and lengths (B,), got {tuple(batch.shape)}, {tuple(lengths.shape)}")
        s = self.settings
        width = 3 if self.layout is not None else batch.shape[2]
        draws = _draw(batch.shape, width, generator, batch.device)
        act = draws.chances < s.probability  # (B, 5): rotation, scale, translation, noise, time shift
        angles = math.radians(s.rotation_degrees) * (2 * draws.angles - 1) * act[:, :1]  # (B, 3)
        scale = torch.where(act[:, 1], s.scale[0] + (s.scale[1] - s.scale[0]) * draws.scale, 1.0)  # (B,)
        offsets = s.translation * (2 * draws.offsets - 1) * act[:, 2:3]  # (B, 3) or (B, F)
        out = batch.clone()
        geometric = act[:, :3].any(dim=1)
        if self.layout is not None:
            out = self._move_hand(out, geometric, angles, scale, offsets)
        else:
            moved = out * scale.to(out.dtype)[:, None, None] + offsets.to(out.dtype)[:, None, :]
            out = torch.where(geometric[:, None, None], moved, out)
        out = out + (s.noise_std * act[:, 3, None, None] * draws.noise).to(out.dtype)
        steps = batch.shape[1]
        length = lengths.to(batch.device).long().clamp(1, steps)
        shift = torch.round(s.time_shift * length * (2 * draws.shift - 1)).long() * act[:, 4]  # (B,) frames
        # Re-padding every sample that changed keeps padding frames copies of the last valid one.
        out = _shift_in_time(out, length, shift)
        return torch.where(act.any(dim=1)[:, None, None], out, batch)

    def _move_hand(
        self,
        out: torch.Tensor,
        geometric: torch.Tensor,
        angles: torch.Tensor,
        scale: torch.Tensor,
        offsets: torch.Tensor,
    ) -> torch.Tensor:
        """Rotate and scale the 21 landmarks about each frame's wrist, then translate them."""
        assert self.layout is not None
        columns = self.layout.to(out.device).reshape(-1)  # (63,): x0, y0, z0, x1, ...
        points = out[:, :, columns].reshape(*out.shape[:2], LANDMARKS, 3)  # (B, T, 21, 3)
        wrist = points[:, :, :1]
        rotation = rotation_matrices(angles).to(out.dtype)  # (B, 3, 3)
        turned = torch.einsum("bij,btlj->btli", rotation, points - wrist)
        moved = wrist + scale.to(out.dtype)[:, None, None, None] * turned + offsets.to(out.dtype)[:, None, None, :]
        points = torch.where(geometric[:, None, None, None], moved, points)
        out[:, :, columns] = points.flatten(-2)
        return out


def _shift_in_time(batch: torch.Tensor, length: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Frame t of sample b becomes frame t - shift[b] (clamped to its valid frames): a positive shift
    repeats the first frame at the start and drops as many at the end, a negative one the reverse.
    Frames at and past length[b] copy the new last valid frame (edge padding); lengths do not change."""
    steps = batch.shape[1]
    t = torch.arange(steps, device=batch.device)[None, :]  # (1, T)
    last = (length - 1)[:, None]  # (B, 1)
    source = (torch.minimum(t, last) - shift[:, None]).clamp(min=0)
    source = torch.minimum(source, last)  # (B, T)
    return torch.gather(batch, 1, source[:, :, None].expand(-1, -1, batch.shape[2]))
