"""RF sensor: a short capture of complex baseband IQ around the control-link bands.

Emitters (sample rate normalised to 1, frequencies in cycles/sample within [-0.5, 0.5)):
- commercial control links: WiFi-like OFDM bursts (52 QPSK subcarriers, cyclic prefix) or
  frequency-hopping GFSK tones (hops every 256 samples over 16 channels);
- military datalink: continuous direct-sequence spread BPSK, wide and faint;
- aircraft: transponder-like pulse trains (on-off keyed, 1 sample in 4 per pulse slot);
- everything else: receiver noise only.
Ambiguities: RF-silent drones look like birds and clutter (which all look alike), and urban WiFi
(`rf_interference`) puts an OFDM burst into a third of all captures whatever the object is.
Received power falls with range (free space, 20 dB per decade).
"""

from __future__ import annotations

import math

import numpy as np

from rooivalk.data.simulators.scene import Scene

CAPTURE_SAMPLES = 4096
# Signal-to-noise ratio in dB at 1 km per emitter, before free-space loss.
_SNR_AT_1KM_DB = {"ofdm": 12.0, "fhss": 10.0, "datalink": 2.0, "transponder": 30.0}


def _qpsk(rng: np.random.Generator, count: int) -> np.ndarray:
    return ((rng.integers(0, 2, count) * 2 - 1) + 1j * (rng.integers(0, 2, count) * 2 - 1)) / math.sqrt(2)


def ofdm_burst(rng: np.random.Generator, length: int, center: float) -> np.ndarray:
    """WiFi-like OFDM: 64-point symbols with 16-sample cyclic prefix, 52 used subcarriers, one burst."""
    symbols = []
    for _ in range(math.ceil(length / 80)):
        spectrum = np.zeros(64, dtype=np.complex128)
        used = np.r_[1:27, 38:64]
        spectrum[used] = _qpsk(rng, used.size)
        symbol = np.fft.ifft(spectrum) * math.sqrt(64 / used.size)
        symbols.append(np.r_[symbol[-16:], symbol])
    signal = np.concatenate(symbols)[:CAPTURE_SAMPLES]
    burst = np.zeros(CAPTURE_SAMPLES, dtype=np.complex128)
    start = int(rng.integers(0, max(1, CAPTURE_SAMPLES - length)))
    stop = min(CAPTURE_SAMPLES, start + length)
    burst[start:stop] = signal[: stop - start]
    # OFDM occupies +-26/64 of the band around DC; scale it down to a 0.25-wide channel at `center`.
    return _shift(_narrow(burst, 0.5), center)


def _narrow(signal: np.ndarray, factor: float) -> np.ndarray:
    """Squeeze a signal's bandwidth by `factor` (crude resampling by spectral truncation)."""
    spectrum = np.fft.fftshift(np.fft.fft(signal))
    n = spectrum.size
    keep = int(n * factor) // 2
    narrow = np.zeros_like(spectrum)
    middle = n // 2
    narrow[middle - keep : middle + keep] = spectrum[middle - keep : middle + keep]
    return np.asarray(np.fft.ifft(np.fft.ifftshift(narrow)) / math.sqrt(factor))


def _shift(signal: np.ndarray, frequency: float) -> np.ndarray:
    return np.asarray(signal * np.exp(2j * np.pi * frequency * np.arange(signal.size)))


def fhss(rng: np.random.Generator) -> np.ndarray:
    """Frequency hopping GFSK: a new channel every 256 samples, +-0.01 deviation for the bits."""
    channels = np.linspace(-0.4, 0.4, 16)
    dwell = 256
    hops = rng.choice(channels, CAPTURE_SAMPLES // dwell)
    bits = np.repeat(rng.integers(0, 2, CAPTURE_SAMPLES // 16) * 2 - 1, 16)
    instantaneous = np.repeat(hops, dwell) + 0.01 * bits
    return np.asarray(np.exp(2j * np.pi * np.cumsum(instantaneous)))


def dsss(rng: np.random.Generator) -> np.ndarray:
    """Direct-sequence BPSK: 4-sample chips of a random spreading code, continuous, 0.3 wide."""
    chips = np.repeat(rng.integers(0, 2, CAPTURE_SAMPLES // 4) * 2 - 1, 4).astype(np.complex128)
    return _shift(_narrow(chips, 0.6), float(rng.uniform(-0.15, 0.15)))


def transponder(rng: np.random.Generator) -> np.ndarray:
    """Pulse-position replies: groups of short pulses on one frequency, otherwise silent."""
    signal = np.zeros(CAPTURE_SAMPLES, dtype=np.complex128)
    for _ in range(int(rng.integers(2, 5))):
        start = int(rng.integers(0, CAPTURE_SAMPLES - 400))
        for slot in np.flatnonzero(rng.integers(0, 2, 96)):
            signal[start + 4 * slot : start + 4 * slot + 2] = 1.0
    return _shift(signal, 0.3)


def render_rf(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """complex64 (CAPTURE_SAMPLES,) IQ: unit-power receiver noise plus whatever emits."""
    noise = (rng.normal(size=CAPTURE_SAMPLES) + 1j * rng.normal(size=CAPTURE_SAMPLES)) / math.sqrt(2)
    capture = noise
    if scene.rf_link != "none":
        snr_db = _SNR_AT_1KM_DB[scene.rf_link] - 20 * math.log10(scene.range_m / 1000.0) + rng.normal(0, 2)
        emitters = {
            "ofdm": lambda: ofdm_burst(rng, int(rng.integers(1200, 3200)), float(rng.uniform(-0.25, 0.25))),
            "fhss": lambda: fhss(rng),
            "datalink": lambda: dsss(rng),
            "transponder": lambda: transponder(rng),
        }
        capture = capture + 10 ** (snr_db / 20) * emitters[scene.rf_link]()
    if scene.rf_interference:  # a WiFi access point nearby, unrelated to the object
        snr_db = float(rng.uniform(0, 15))
        capture = capture + 10 ** (snr_db / 20) * ofdm_burst(
            rng, int(rng.integers(800, 3200)), float(rng.uniform(-0.25, 0.25))
        )
    return capture.astype(np.complex64)
