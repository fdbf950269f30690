"""Configuration of the conditional GAN baselines (WaveGAN* and Pulse2Pulse) and a registry of named presets.

``GANConfig`` holds everything needed to rebuild the generator and the discriminator
from a checkpoint: which generator (``model``), the model sizes ``d`` of the
generator and of the discriminator (Thambawita et al. 2021 use one ``d`` = 50 for
both; the tiny presets shrink the discriminator separately because its width grows
to 100 d), the noise size of WaveGAN*, the phase-shuffle shift and whether the
discriminator is conditioned (``cond_discriminator``: ``none`` as in the paper, or
``projection``). Presets: ``paper`` (d = 50, the authors' fork
univanxx/Pulse2Pulse), ``small`` (CPU smoke runs) and ``tiny`` (unit tests). Every
config is validated on construction, so a bad override fails with a message naming
the field.

Example::

    python -c "from pulse2pulse.config import get_config; print(get_config('paper', model='pulse2pulse'))"
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from nvae_ecg.config import DictConfig

#: Generators implemented in :mod:`pulse2pulse.models`.
MODELS = ("wavegan_star", "pulse2pulse")
#: Discriminator conditioning: none (paper) or a projection discriminator (Miyato & Koyama 2018).
COND_DISCRIMINATORS = ("none", "projection")
#: The up-/down-sampling stacks of both generators reach exactly this many samples (10 s at 500 Hz).
ECG_LENGTH = 5000


@dataclass
class GANConfig(DictConfig):
    """Hyper-parameters of the generators and the discriminator in :mod:`pulse2pulse.models`."""

    model: str = "wavegan_star"
    num_classes: int = 9
    num_channels: int = 8
    length: int = ECG_LENGTH
    model_size: int = 50
    disc_model_size: int = 50
    latent_dim: int = 100
    shift_factor: int = 2
    disc_slope: float = 0.2
    cond_discriminator: str = "none"

    def __post_init__(self) -> None:
        self.check_field_types()
        if self.model not in MODELS:
            raise ValueError(f"GANConfig.model={self.model!r} is unknown; choose one of {MODELS}")
        if self.cond_discriminator not in COND_DISCRIMINATORS:
            raise ValueError(f"GANConfig.cond_discriminator={self.cond_discriminator!r} is unknown; "
                             f"choose one of {COND_DISCRIMINATORS}")
        if self.length != ECG_LENGTH:
            raise ValueError(f"GANConfig.length={self.length}: the generators' sampling stacks produce exactly "
                             f"{ECG_LENGTH} samples (10 s at 500 Hz); prepare the data with --fs 500 --seconds 10")
        if self.num_channels != 8:
            raise ValueError(f"GANConfig.num_channels={self.num_channels}: the generators model the 8 independent "
                             "leads (I, III, V1..V6)")
        # d // 5 is the narrowest layer of both generators; below 5 it would have no channels.
        if self.model_size < 5:
            raise ValueError(f"GANConfig.model_size must be >= 5 (its fifth is a layer width), got {self.model_size}")
        for name in ("disc_model_size", "latent_dim", "num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"GANConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.shift_factor < 0:
            raise ValueError(f"GANConfig.shift_factor must be >= 0, got {self.shift_factor}")


CONFIGS: dict[str, GANConfig] = {
    # Thambawita et al. 2021 and the cNVAE-ECG authors' fork: model size d = 50 for G and D.
    "paper": GANConfig(),
    # CPU smoke runs at the full length: G widths 100..4, D widths 8..800.
    "small": GANConfig(model_size=20, disc_model_size=8),
    # Unit tests only.
    "tiny": GANConfig(model_size=20, disc_model_size=2, latent_dim=16),
}


def get_config(name: str, **overrides: Any) -> GANConfig:
    """Copy of the named preset with field overrides applied and validated."""
    if name not in CONFIGS:
        raise ValueError(f"unknown GAN config {name!r}; available: {', '.join(sorted(CONFIGS))}")
    known = {f.name for f in fields(GANConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown GANConfig override(s) {unknown}; valid keys are: {', '.join(sorted(known))}")
    return replace(CONFIGS[name], **overrides)
