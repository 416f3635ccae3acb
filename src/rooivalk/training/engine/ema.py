"""Exponential moving average of a model's weights, on torch's AveragedModel."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from rooivalk.models import fake_quant


class ModelEMA:
    """ema = decay * ema + (1 - decay) * weights after every `update`; buffers (BatchNorm statistics)
    are averaged too, so `module` can be evaluated as it is.

    The average starts from the model's weights at construction: AveragedModel copies instead of
    averaging on its first update, so one update is spent here rather than on the first trained step.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        average = get_ema_multi_avg_fn(decay)  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        self._averaged = AveragedModel(model, multi_avg_fn=average, use_buffers=True)
        self._averaged.requires_grad_(False)
        self.update(model)

    @property
    def module(self) -> nn.Module:
        """The averaged copy of the model (a separate nn.Module; evaluate or save it)."""
        module = self._averaged.module
        assert isinstance(module, nn.Module)
        return module

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self._averaged.update_parameters(model)
        # QAT's observed activation ranges are not weights: an average that starts at the zeros of a freshly
        # prepared layer would clip every activation of the averaged copy. It takes the live ranges.
        averaged = dict(self.module.named_buffers())
        for name, buffer in model.named_buffers():
            if name.rsplit(".", 1)[-1] == fake_quant.RANGE_BUFFER:
                averaged[name].copy_(buffer)

    def state_dict(self) -> dict[str, Any]:
        # "n_averaged" plus the module's weights under "module."; tensors only, weights_only-safe.
        return self._averaged.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._averaged.load_state_dict(state)
