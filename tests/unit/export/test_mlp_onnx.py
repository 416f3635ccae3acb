"""The tabular MLP exports to ONNX with a dynamic batch and matches PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from rooivalk.export.onnx_export import export_module, onnx_input_info, verify_module
from rooivalk.models.mlp import build_mlp

FEATURES, CLASSES = 11, 4


@pytest.mark.parametrize("batch_norm", [True, False])
def test_onnx_matches_pytorch_at_two_batch_sizes(tmp_path: Path, batch_norm: bool) -> None:
    torch.manual_seed(0)
    model = build_mlp(FEATURES, CLASSES, batch_norm=batch_norm)
    # A few training steps' worth of batch statistics, so BatchNorm is not the identity.
    model.train()(torch.randn(64, FEATURES) * 3 + 1)
    path = export_module(model, (torch.randn(2, FEATURES),), ["features"], ["logits"], tmp_path / "mlp.onnx")
    assert onnx_input_info(path) == ("features", True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = np.random.default_rng(0)
    for batch in (1, 37):
        rows = generator.standard_normal((batch, FEATURES)).astype(np.float32)
        assert session.run(None, {"features": rows})[0].shape == (batch, CLASSES)
        check = verify_module(model, path, [rows])
        assert check.samples == batch
        assert check.max_abs_diff < 1e-5, check
        assert check.top1_agreement == 1.0
