"""Weather and sensor effects for detection training images: fog, rain, sun flare, headlight glare, noise.

torchvision has no weather transforms, so these are small tensor ops. They are photometric: pixels change,
geometry does not, so a sample's boxes stay valid. Each takes an image (C, H, W), uint8 or float in
[0, 1], and returns the same shape and dtype. Random numbers come from `generator` or, when it is None,
the torch global RNG (`torch.default_generator`), which the training engine seeds before every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.nn import functional as F

from rooivalk.training.tasks.augment import line_kernel

WeatherEffect = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]

WARM_WHITE = (1.0, 0.95, 0.85)  # sunlight and halogen/LED headlights through a lens: slightly warm


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, normal: bool = False) -> torch.Tensor:
    """Uniform [0, 1) (or standard normal) numbers on the generator's device (the CPU for the global RNG)."""
    device = generator.device if generator is not None else None
    sample = torch.randn if normal else torch.rand
    return sample(shape, generator=generator, device=device)


def _uniform(generator: torch.Generator | None, low: float, high: float) -> float:
    return low + (high - low) * float(_rand((), generator))


def _to_float(image: torch.Tensor) -> torch.Tensor:
    return image.float() / 255 if image.dtype == torch.uint8 else image.float()


def _like(result: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """result in [0, 1] back to image's dtype (uint8 rounds to the nearest level)."""
    result = result.clamp(0, 1)
    return (result * 255).round().to(torch.uint8) if image.dtype == torch.uint8 else result.to(image.dtype)


def _colour(image: torch.Tensor, rgb: tuple[float, float, float]) -> torch.Tensor:
    """(C, 1, 1) light colour for image's channels: rgb for 3 channels, its mean otherwise."""
    values = torch.tensor(rgb) if image.shape[0] == 3 else torch.full((image.shape[0],), sum(rgb) / 3)
    return values.to(image).view(-1, 1, 1)


def _grid(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates ys (H, 1) and xs (1, W), broadcasting to (H, W)."""
    height, width = image.shape[-2:]
    ys = torch.arange(height, dtype=torch.float32, device=image.device).view(-1, 1) + 0.5
    xs = torch.arange(width, dtype=torch.float32, device=image.device).view(1, -1) + 0.5
    return ys, xs


def _screen(image: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """Screen blend: adds light without clipping highlights to flat white as fast as a plain sum."""
    return 1 - (1 - image) * (1 - light.clamp(0, 1))


def fog(image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Haze toward a light grey airlight, denser toward the top of the frame (farther away) and in patches."""
    x = _to_float(image)
    density = _uniform(generator, 0.3, 0.6)
    airlight = _uniform(generator, 0.7, 0.9)
    patches = _rand((1, 1, 4, 4), generator).to(x)
    patches = F.interpolate(patches, size=x.shape[-2:], mode="bicubic", align_corners=False)[0].clamp(0, 1)
    ys, _ = _grid(x)
    depth = 1 - 0.5 * ys / x.shape[-2]  # (H, 1): 1 at the top, 0.5 at the bottom
    mask = density * depth * (0.6 + 0.4 * patches)  # (1, H, W) transmission loss
    return _like(x * (1 - mask) + airlight * mask, image)


def rain(image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Overcast dimming plus thin bright near-vertical streaks (sparse drops smeared along one slanted line)."""
    x = _to_float(image)
    height, width = x.shape[-2:]
    density = _uniform(generator, 0.002, 0.008)
    angle = 90.0 + _uniform(generator, -15.0, 15.0)
    brightness = _uniform(generator, 0.3, 0.6)
    dimming = _uniform(generator, 0.8, 0.95)
    length = 2 * min(max(min(height, width) // 24, 1), 15) + 1  # odd, ~1/12 of the short side, 31 px at most
    drops = (_rand((1, 1, height, width), generator) < density).to(x)  # (1, 1, H, W)
    kernel = line_kernel(length, angle).to(x)[None, None]  # (1, 1, k, k)
    streaks = F.conv2d(drops, kernel, padding=length // 2)[0].clamp(0, 1)  # (1, H, W)
    return _like(x * dimming + brightness * streaks * _colour(x, (0.9, 0.92, 1.0)), image)


def sun_flare(image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A wide glow around a sun in the upper half plus faint ghosts along the line through the frame centre."""
    x = _to_float(image)
    height, width = x.shape[-2:]
    sun_x, sun_y = _uniform(generator, 0.0, 1.0) * width, _uniform(generator, 0.0, 0.5) * height
    radius = _uniform(generator, 0.15, 0.35) * min(height, width)
    intensity = _uniform(generator, 0.6, 1.0)
    ys, xs = _grid(x)
    light = intensity * torch.exp(-((xs - sun_x) ** 2 + (ys - sun_y) ** 2) / (2 * radius**2))  # (H, W)
    # Lens ghosts: soft discs at points mirrored through the optical centre, as internal reflections place them.
    for position, size, strength in ((-0.4, 0.15, 0.25), (-0.8, 0.08, 0.3), (-1.2, 0.25, 0.15)):
        ghost_x = width / 2 + position * (sun_x - width / 2)
        ghost_y = height / 2 + position * (sun_y - height / 2)
        ghost_r = size * radius
        distance = torch.sqrt((xs - ghost_x) ** 2 + (ys - ghost_y) ** 2)
        light = light + intensity * strength * torch.sigmoid((ghost_r - distance) / max(ghost_r * 0.2, 0.5))
    return _like(_screen(x, light * _colour(x, WARM_WHITE)), image)


def glare(image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Headlight glare: one or two bright cores with a halo and a horizontal streak, in the lower part of the frame."""
    x = _to_float(image)
    height, width = x.shape[-2:]
    short = min(height, width)
    centre_x, centre_y = _uniform(generator, 0.1, 0.9) * width, _uniform(generator, 0.4, 0.9) * height
    spacing = _uniform(generator, 0.05, 0.15) * width  # between a vehicle's two headlights
    pair = _uniform(generator, 0.0, 1.0) < 0.5
    core, halo = _uniform(generator, 0.01, 0.03) * short, _uniform(generator, 0.05, 0.12) * short
    streak = _uniform(generator, 0.2, 0.5) * width
    intensity = _uniform(generator, 0.7, 1.0)
    ys, xs = _grid(x)
    light = torch.zeros_like(xs * ys)  # (H, W)
    for lamp_x in (centre_x - spacing / 2, centre_x + spacing / 2) if pair else (centre_x,):
        dx2, dy2 = (xs - lamp_x) ** 2, (ys - centre_y) ** 2
        light = light + torch.exp(-(dx2 + dy2) / (2 * core**2))  # saturated core
        light = light + 0.4 * torch.exp(-(dx2 + dy2) / (2 * halo**2))  # scatter in the lens and air
        light = light + 0.3 * torch.exp(-dx2 / (2 * streak**2) - dy2 / (2 * max(core / 3, 0.5) ** 2))
    return _like(_screen(x, intensity * light * _colour(x, WARM_WHITE)), image)


def sensor_noise(image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shot noise (variance proportional to the signal: photon counting) plus gaussian read noise."""
    x = _to_float(image)
    photons = math.exp(_uniform(generator, math.log(30.0), math.log(500.0)))  # full-well photons: low light is noisy
    read_sigma = _uniform(generator, 0.005, 0.03)
    shot = _rand(tuple(x.shape), generator, normal=True).to(x) * torch.sqrt(x / photons)
    read = _rand(tuple(x.shape), generator, normal=True).to(x) * read_sigma
    return _like(x + shot + read, image)


# Applied in this order: scene (fog, rain), then the lens (flare, glare), then the sensor (noise).
# Keys are DetectionAugmentSettings' probability fields.
WEATHER_EFFECTS: dict[str, WeatherEffect] = {
    "fog": fog,
    "rain": rain,
    "sun_flare": sun_flare,
    "glare": glare,
    "noise": sensor_noise,
}
