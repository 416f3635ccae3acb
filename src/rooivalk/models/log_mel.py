"""A log-mel spectrogram computed inside the model, so a deployed acoustic model takes raw audio.

The short-time DFT is a matmul with a fixed windowed cosine/sine matrix (as in the RF family's
`LogSpectrogram`): it exports to ONNX and quantizes cleanly, unlike torch.stft's complex output.
The mel filterbank is the HTK-style triangular one (Slaney's area normalisation left out: the
per-band statistics are standardised downstream by a BatchNorm anyway).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(
    n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular filters, centres evenly spaced on the mel scale."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"mel band edges need 0 <= f_min < f_max <= {sample_rate / 2}: got {f_min}, {f_max}")
    bins_hz = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(np.array(f_min)), hz_to_mel(np.array(f_max)), n_mels + 2))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_hz[:, None] - lower) / (centre - lower)
    falling = (upper - bins_hz[:, None]) / (upper - centre)
    filters: np.ndarray = np.clip(np.minimum(rising, falling), 0.0, None)
    return filters


class LogMelSpectrogram(nn.Module):
    """(N, S) waveform -> (N, n_mels, frames) natural-log mel power; Hann window, hop n_fft / 2."""

    def __init__(self, sample_rate: int, n_fft: int = 512, n_mels: int = 64) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, n_fft // 2
        k = np.arange(n_fft)
        angles = 2 * np.pi * np.outer(k, np.arange(n_fft // 2 + 1)) / n_fft  # (n_fft, bins): one-sided
        window = np.hanning(n_fft)[:, None]
        self.register_buffer("cos", torch.tensor(np.cos(angles) * window, dtype=torch.float32))
        self.register_buffer("sin", torch.tensor(np.sin(angles) * window, dtype=torch.float32))
        self.register_buffer("mel", torch.tensor(mel_filterbank(n_fft, n_mels, sample_rate), dtype=torch.float32))

    cos: torch.Tensor
    sin: torch.Tensor
    mel: torch.Tensor

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        frames = waveform.unfold(-1, self.n_fft, self.hop)  # (N, T, n_fft)
        power = ((frames @ self.cos) ** 2 + (frames @ self.sin) ** 2) / self.n_fft  # (N, T, bins)
        return torch.log(power @ self.mel + 1e-10).transpose(1, 2)  # (N, n_mels, T)
