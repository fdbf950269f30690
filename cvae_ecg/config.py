"""Configuration of the CVAE of Sang et al. (YulingSang/CVAE_ECG) and a registry of named presets.

Source (line numbers: YulingSang/CVAE_ECG at f17e4ab, as read from the indexed copy of those files at 393dbcf).
``CVAEConfig`` holds what rebuilds the network from a checkpoint: the input height (leads) and width (samples),
the filters of the two convolutions (5 and 5 in their ``train.py``:22), the time kernel (40, ``train.py``:27; the
lead kernel spans every lead), the latent size (10, ``train.py``:34), the condition size and the Keras batch-norm
defaults carried over (momentum 0.99 in Keras is 0.01 in PyTorch's convention, epsilon 1e-3). Presets: ``paper``
(the published configuration, 12 x 400 median beats with a 1-d condition, ``train.py``:18/38: 35,112 trainable
parameters) and ``ecg`` (our data: the 8 independent leads x 5000 samples, kernels (1, 40) and (8, 1), the 4
demographic entries of :mod:`nvae_ecg.demographics` as condition; the trainer adds the class columns for
``--condition both``). Every config is validated on construction, so a bad override fails naming the field.

Example::

    python -c "from cvae_ecg.config import get_config; print(get_config('ecg', condition_dim=13))"
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from nvae_ecg.config import DictConfig
from nvae_ecg.demographics import CONDITION_DIM

#: How the [0, 1] prepared ECGs are shown to the network: ``standard`` (each lead minus its training-split mean,
#: over its standard deviation) or ``unit`` (unchanged). Their decoder ends in a batch norm whose initial
#: gamma = 1, beta = 0 emits zero-mean, unit-variance output; against [0, 1] data of per-lead std ~0.05 the
#: first hundreds of steps only move that layer's gamma/beta (train MSE ~1 at step 1, 0.67 at step 96).
AMPLITUDES = ("standard", "unit")


@dataclass
class CVAEConfig(DictConfig):
    """Hyper-parameters of :class:`cvae_ecg.model.CVAE` (defaults: the published configuration)."""

    n_leads: int = 12
    length: int = 400
    filters1: int = 5
    filters2: int = 5
    kernel: int = 40
    pool: int = 2
    latent_dim: int = 10
    condition_dim: int = 1
    bn_momentum: float = 0.01
    bn_eps: float = 1e-3
    amplitude: str = "standard"

    def __post_init__(self) -> None:
        self.check_field_types()
        for name in ("n_leads", "length", "filters1", "filters2", "kernel", "pool", "latent_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"CVAEConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.condition_dim < 0:
            raise ValueError(f"CVAEConfig.condition_dim must be >= 0, got {self.condition_dim}")
        if self.length % self.pool:
            raise ValueError(f"CVAEConfig.length={self.length} must be divisible by pool={self.pool}: the decoder "
                             "up-samples the pooled width back by the same factor")
        if self.amplitude not in AMPLITUDES:
            raise ValueError(f"CVAEConfig.amplitude={self.amplitude!r} is unknown; choose one of {AMPLITUDES}")
        if not 0 < self.bn_momentum < 1 or self.bn_eps <= 0:
            raise ValueError("CVAEConfig.bn_momentum must lie in (0, 1) and bn_eps be positive")

    @property
    def pooled_width(self) -> int:
        """Width of the feature map after the average pooling."""
        return self.length // self.pool


CONFIGS: dict[str, CVAEConfig] = {
    # Their train.py: input (12, 400, 1), filters (5, 5), kernels (1, 40) / (12, 1), latent 10, condition 1.
    "paper": CVAEConfig(),
    # Our data: 8 independent leads x 10 s at 500 Hz; condition = [age z, age missing, male, female].
    "ecg": CVAEConfig(n_leads=8, length=5000, condition_dim=CONDITION_DIM),
}


def get_config(name: str, **overrides: Any) -> CVAEConfig:
    """Copy of the named preset with field overrides applied and validated."""
    if name not in CONFIGS:
        raise ValueError(f"unknown CVAE config {name!r}; available: {', '.join(sorted(CONFIGS))}")
    known = {f.name for f in fields(CVAEConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown CVAEConfig override(s) {unknown}; valid keys are: {', '.join(sorted(known))}")
    return replace(CONFIGS[name], **overrides)
