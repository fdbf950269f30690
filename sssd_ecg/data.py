"""How our prepared data meet SSSD-ECG: the 100 Hz resampling and the amplitude scale, both ways.

The prepared data (``nvae_ecg.data.prepare``) hold 10 s at 500 Hz (5000 samples), which
``GeneratorDataset`` serves as the 8 independent leads min-max normalised to [0, 1] by the prepare bounds.
SSSD-ECG was trained at 100 Hz (1000 samples; their issues #19 and #26: no learning at 5000 steps), in mV
without normalisation. :func:`resample` changes the length with ``scipy.signal.resample_poly`` (polyphase FIR,
5000 -> 1000 and back: nothing above 50 Hz survives); the length equal to the data's is the identity, exactly.
:func:`to_model` / :func:`from_model` map [0, 1] to the model's amplitude (``pm1``: [-1, 1]; ``unit``:
unchanged; ``mv``: millivolts by the bounds) and back. :class:`SSSDDataset` applies both to GeneratorDataset.

Example::

    python -c "import numpy as np; from sssd_ecg.data import resample; print(resample(np.zeros((8, 5000)), 1000).shape)"
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.signal import resample_poly

from nvae_ecg.data.bounds import Bounds
from nvae_ecg.data.datasets import GeneratorDataset


def resample(x, length: int):
    """Resample the last axis of ``x`` (numpy or torch) to ``length`` samples (polyphase; identity if equal)."""
    n = x.shape[-1]
    if n == length:
        return x
    g = math.gcd(int(length), int(n))
    if torch.is_tensor(x):
        y = resample_poly(x.detach().cpu().double().numpy(), length // g, n // g, axis=-1)
        return torch.from_numpy(y).to(device=x.device, dtype=x.dtype)
    return resample_poly(np.asarray(x, dtype=np.float64), length // g, n // g, axis=-1).astype(np.asarray(x).dtype)


def to_model(x01, amplitude: str, bounds: Bounds | None = None):
    """[0, 1] signals (..., 8, T) -> the model's amplitude ('pm1', 'unit' or 'mv')."""
    if amplitude == "pm1":
        return 2 * x01 - 1
    if amplitude == "unit":
        return x01
    if amplitude == "mv":
        return bounds.from_unit(x01)
    raise ValueError(f"unknown amplitude {amplitude!r}")


def from_model(x, amplitude: str, bounds: Bounds | None = None):
    """Inverse of :func:`to_model`: the model's amplitude -> [0, 1] (not clipped)."""
    if amplitude == "pm1":
        return (x + 1) / 2
    if amplitude == "unit":
        return x
    if amplitude == "mv":
        return bounds.to_unit(x, clip=False)
    raise ValueError(f"unknown amplitude {amplitude!r}")


class SSSDDataset(torch.utils.data.Dataset):
    """``GeneratorDataset`` as the model sees it: (x, y) with x float32 (8, length) in ``amplitude``."""

    def __init__(self, base: GeneratorDataset, length: int, amplitude: str):
        self.base, self.length, self.amplitude = base, int(length), amplitude
        self.bounds, self.labels, self.class_names = base.bounds, base.labels, base.class_names

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        x = to_model(resample(x.numpy(), self.length), self.amplitude, self.bounds)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), y
