"""The content-addressed feature cache: hits, keyed inputs, untrusted manifests, concurrent writers."""

from __future__ import annotations

import json
import threading

import numpy as np
import torch
from torch import nn

from rooivalk.features.cache import MANIFEST, cached_features, encoder_digest


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(6, 4)
        self.head = nn.Linear(4, 2)
        self.calls = 0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += len(x)
        return self.body(x)


def _inputs(n: int = 10) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 6)).astype(np.float32)


def _cache(root, model, inputs=None, preprocessing=None, version="ds-1", split="train"):
    return cached_features(str(root), "rf", model, _inputs() if inputs is None else inputs,
                           preprocessing or {"kind": "iq"}, version, split, batch_size=4)  # fmt: skip


def test_second_run_does_zero_forward_passes(tmp_path):
    torch.manual_seed(0)
    model = Encoder()
    first = _cache(tmp_path, model)
    assert not first.hit
    assert first.forward_passes == 10
    assert model.calls == 10
    second = _cache(tmp_path, model)
    assert second.hit
    assert second.forward_passes == 0
    assert model.calls == 10
    np.testing.assert_array_equal(first.features, second.features)


def test_every_keyed_input_recomputes_and_the_head_does_not(tmp_path):
    torch.manual_seed(0)
    model = Encoder()
    base = _cache(tmp_path, model).key
    keys = {
        _cache(tmp_path, model, preprocessing={"kind": "iq", "n_fft": 128}).key,
        _cache(tmp_path, model, version="ds-2").key,
        _cache(tmp_path, model, split="val").key,
    }
    assert base not in keys
    assert len(keys) == 3
    digest = encoder_digest(model)
    with torch.no_grad():
        model.head.weight.add_(1.0)  # the head is not part of the encoder
    assert encoder_digest(model) == digest
    with torch.no_grad():
        model.body.bias.add_(1.0)
    assert encoder_digest(model) != digest
    assert _cache(tmp_path, model).key != base


def test_a_manifest_whose_checksum_does_not_match_is_rebuilt(tmp_path):
    torch.manual_seed(0)
    model = Encoder()
    entry = _cache(tmp_path, model)
    manifest = json.loads((tmp_path / "rf" / entry.key / MANIFEST).read_text())
    path = tmp_path / "rf" / entry.key / manifest["features_file"]
    tampered = np.load(path)
    tampered[0, 0] += 1
    np.save(path, tampered)
    again = _cache(tmp_path, model)
    assert not again.hit
    assert again.forward_passes == 10
    assert "does not match" in again.rebuilt_reason
    np.testing.assert_array_equal(again.features, entry.features)
    assert _cache(tmp_path, model).hit


def test_concurrent_writers_of_one_key_leave_one_complete_entry(tmp_path):
    torch.manual_seed(0)
    models = [Encoder() for _ in range(4)]
    for model in models[1:]:
        model.load_state_dict(models[0].state_dict())
    results = []
    threads = [threading.Thread(target=lambda m=m: results.append(_cache(tmp_path, m))) for m in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({r.key for r in results}) == 1
    final = _cache(tmp_path, models[0])
    assert final.hit  # the published manifest names a complete file whose checksum matches
    np.testing.assert_array_equal(final.features, results[0].features)
