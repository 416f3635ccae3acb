"""The image preprocessing a model expects: input size, channels, normalization, memory format
(the image task batches with it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class InputSpec:
    input_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels_last: bool

    def preprocessing(self) -> tuple[int, tuple[float, ...], tuple[float, ...], int, bool]:
        """Positional arguments of to_model_input / iter_model_batches after the images."""
        return self.input_size, self.mean, self.std, self.in_chans, self.channels_last
