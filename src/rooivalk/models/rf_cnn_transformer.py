"""The `rf_cnn_transformer` family: a CNN + Transformer over log-magnitude spectrograms of IQ captures.

Input: float (N, 2, L) IQ (real and imaginary rows; complex tensors do not export to ONNX).
The spectrogram is computed inside the model with a fixed DFT matrix (a matmul, which exports and
quantizes cleanly, unlike torch.stft), so a deployed model takes raw IQ like the sensor emits it.
Trained from scratch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from rooivalk.models.registry import register_family
from rooivalk.models.sensor_base import SensorModel
from rooivalk.plan import ModelSpec

# architecture -> (n_fft, cnn channels, transformer width, layers, heads)
VARIANTS = {"small": (64, (16, 32), 64, 2, 4), "base": (128, (32, 64), 128, 4, 4)}


class LogSpectrogram(nn.Module):
    """(N, 2, L) IQ -> (N, 1, n_fft, frames) log power, DC in the middle (fftshift), Hann window."""

    def __init__(self, n_fft: int) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop = n_fft // 2
        k = np.arange(n_fft)
        angles = 2 * np.pi * np.outer(k, k) / n_fft
        shift = np.roll(np.arange(n_fft), n_fft // 2)  # output bin order after fftshift
        window = np.hanning(n_fft)
        self.register_buffer("cos", torch.tensor((np.cos(angles) * window[:, None])[:, shift], dtype=torch.float32))
        self.register_buffer("sin", torch.tensor((np.sin(angles) * window[:, None])[:, shift], dtype=torch.float32))

    cos: torch.Tensor
    sin: torch.Tensor

    def forward(self, iq: torch.Tensor) -> torch.Tensor:
        frames = iq.unfold(-1, self.n_fft, self.hop)  # (N, 2, T, n_fft)
        re, im = frames[:, 0], frames[:, 1]
        # DFT of (re + j im) with e^{-j angle}: real = re cos + im sin, imag = im cos - re sin.
        real = re @ self.cos + im @ self.sin
        imag = im @ self.cos - re @ self.sin
        power = (real**2 + imag**2) / self.n_fft
        return torch.log(power + 1e-6).transpose(1, 2).unsqueeze(1)  # (N, 1, n_fft, T)


class RFCNNTransformer(SensorModel):
    encoder_groups = {"cnn": ["cnn"], "transformer": ["position", "tokens", "transformer", "norm"]}

    def __init__(self, num_classes: int, variant: str = "small", drop_rate: float = 0.1) -> None:
        n_fft, (c1, c2), width, layers, heads = VARIANTS[variant]
        super().__init__(width, num_classes, drop_rate)
        self.spectrogram = LogSpectrogram(n_fft)
        self.cnn = nn.Sequential(
            nn.BatchNorm2d(1),  # the log power's scale depends on the receiver gain; learn it away
            nn.Conv2d(1, c1, 3, padding=1),
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.BatchNorm2d(c2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.tokens = nn.Linear(c2 * (n_fft // 4), width)  # one token per (pooled) time frame
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.1, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.max_tokens = 512
        self.position = nn.Parameter(torch.zeros(1, self.max_tokens, width))
        nn.init.normal_(self.position, std=0.02)

    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        maps = self.cnn(self.spectrogram(inputs))  # (N, c2, n_fft/4, T/4)
        n, channels, freq, time = maps.shape
        tokens = self.tokens(maps.permute(0, 3, 1, 2).reshape(n, time, channels * freq))  # (N, T/4, width)
        tokens = tokens + self.position[:, :time]
        encoded = self.transformer(tokens)
        return self.norm(encoded.mean(dim=1))  # type: ignore[no-any-return]  # (N, width)


def iq_to_input(iq: np.ndarray) -> np.ndarray:
    """complex (N, L) captures -> float32 (N, 2, L), each capture scaled to unit RMS noise floor.

    Per-capture scaling by the median magnitude (the noise floor, robust to a strong burst) makes
    the model independent of receiver gain while keeping the burst's level relative to noise.
    """
    floor = np.median(np.abs(iq), axis=-1, keepdims=True) / math.sqrt(math.log(4))  # Rayleigh median
    scaled = iq / np.maximum(floor, 1e-12)
    return np.stack([scaled.real, scaled.imag], axis=1).astype(np.float32)


@register_family("rf_cnn_transformer", task="tensor")
def create_rf_cnn_transformer(spec: ModelSpec, num_classes: int) -> nn.Module:
    if spec.architecture not in VARIANTS:
        raise ValueError(
            f"model.architecture: {spec.architecture!r} is not an rf_cnn_transformer; use {list(VARIANTS)}"
        )
    return RFCNNTransformer(num_classes, spec.architecture, spec.drop_rate)
