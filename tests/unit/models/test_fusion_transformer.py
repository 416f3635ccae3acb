"""Fusion: modality dropout's rules, and masked sensors having no influence at inference."""

from __future__ import annotations

import torch

from rooivalk.models.fusion_transformer import FusionTransformer, ModalityDropout

DIMS = {"optical": 12, "rf": 6, "radar": 8, "acoustic": 4}


def _features(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(n, dim, generator=generator) for name, dim in DIMS.items()}


def test_modality_dropout_hides_one_or_two_but_never_the_last_sensor():
    dropout = ModalityDropout(p=0.5, max_dropped=2).train()
    present = torch.ones(20000, 4, dtype=torch.bool)
    present[:5000, 1:] = False  # these events only have the optical sensor
    kept = dropout(present, torch.Generator().manual_seed(0))
    dropped = (present & ~kept).sum(dim=1)
    assert kept.any(dim=1).all()
    assert (dropped[:5000] == 0).all()  # the only sensor is never hidden
    assert set(dropped[5000:].unique().tolist()) == {0, 1, 2}
    assert abs((dropped[5000:] > 0).float().mean().item() - 0.5) < 0.02
    assert not (kept & ~present).any()  # never invents a sensor
    assert torch.equal(dropout.eval()(present), present)


def test_a_masked_sensor_does_not_change_the_prediction():
    torch.manual_seed(0)
    model = FusionTransformer(DIMS, num_classes=5, width=16, depth=1, heads=2).eval()
    features = _features(6)
    present = torch.ones(6, 4, dtype=torch.bool)
    present[:, 1] = False  # RF down
    before = model(features, present)
    features["rf"] = features["rf"] * 100 + 5  # garbage in the masked slot
    torch.testing.assert_close(model(features, present), before)
    present[:, 1] = True
    assert not torch.allclose(model(features, present), before)


def test_fusion_layer_groups_cover_every_parameter():
    from rooivalk.models import layer_groups

    groups = layer_groups(FusionTransformer(DIMS, num_classes=3, width=16, depth=1, heads=2))
    assert [g.name for g in groups] == ["fusion", "head"]
