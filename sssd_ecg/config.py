"""Configuration of SSSD-ECG (network, diffusion schedule, signal representation) and a registry of named presets.

``SSSDConfig`` holds everything needed to rebuild the denoiser and the diffusion from a checkpoint: the
backbone sizes of Alcaraz & Strodthoff 2023 (their ``config_SSSD_ECG.json`` ``wavenet_config``), the S4
settings, the schedule (T = 200 linear betas from 1e-4 to 0.02) and how our prepared data are shown to the
network: ``length`` samples per 10 s (1000: 100 Hz as the authors trained, the default; 5000: the native
500 Hz) and ``amplitude`` (``pm1``: the [0, 1] min-max data mapped to [-1, 1], the default; ``unit``: [0, 1];
``mv``: back to millivolts by the prepare bounds, as the authors' unnormalised data). Presets: ``paper`` (the
published network: 50,194,568 trainable parameters with our 9 classes), ``small`` (CPU smoke runs) and
``tiny`` (unit tests). Every config is validated on construction.

Example::

    python -c "from sssd_ecg.config import get_config; print(get_config('paper', length=5000))"
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from nvae_ecg.config import DictConfig

#: How the [0, 1] data are presented to the network (see the module docstring).
AMPLITUDES = ("pm1", "unit", "mv")
#: Samples per ECG of the prepared data (10 s at 500 Hz); the model's ``length`` resamples from it.
DATA_LENGTH = 5000
#: The authors' S4 time-step range at 1000 samples per 10 s; other lengths scale it by 1000 / length.
DT_RANGE_AT_1000 = (1e-3, 1e-1)


@dataclass
class SSSDConfig(DictConfig):
    """Hyper-parameters of :class:`sssd_ecg.model.SSSDECG` and :class:`sssd_ecg.diffusion.Diffusion`."""

    num_classes: int = 9
    num_channels: int = 8
    length: int = 1000
    data_length: int = DATA_LENGTH
    amplitude: str = "pm1"
    res_channels: int = 256
    skip_channels: int = 256
    num_res_layers: int = 36
    step_embed_in: int = 128
    step_embed_mid: int = 512
    step_embed_out: int = 512
    label_embed_dim: int = 128
    s4_d_state: int = 64
    s4_dropout: float = 0.0
    s4_bidirectional: bool = True
    s4_layernorm: bool = True
    dt_min: float = 1e-3
    dt_max: float = 0.1
    num_steps: int = 200
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self) -> None:
        self.check_field_types()
        if self.amplitude not in AMPLITUDES:
            raise ValueError(f"SSSDConfig.amplitude={self.amplitude!r} is unknown; choose one of {AMPLITUDES}")
        if self.num_channels != 8:
            raise ValueError(f"SSSDConfig.num_channels={self.num_channels}: the model generates the 8 independent "
                             "leads (I, III, V1..V6)")
        for name in ("num_classes", "res_channels", "skip_channels", "num_res_layers", "step_embed_mid",
                     "step_embed_out", "label_embed_dim", "num_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"SSSDConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.step_embed_in < 4 or self.step_embed_in % 2:
            raise ValueError(f"SSSDConfig.step_embed_in must be even and >= 4 (sin and cos halves), "
                             f"got {self.step_embed_in}")
        if self.s4_d_state < 2 or self.s4_d_state % 2:
            raise ValueError(f"SSSDConfig.s4_d_state must be even and >= 2 (conjugate pairs), got {self.s4_d_state}")
        if not 2 <= self.length <= self.data_length:
            raise ValueError(f"SSSDConfig.length must lie in [2, data_length={self.data_length}], got {self.length}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"SSSDConfig needs 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise ValueError(f"SSSDConfig needs 0 < beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if not 0 <= self.s4_dropout < 1:
            raise ValueError(f"SSSDConfig.s4_dropout must lie in [0, 1), got {self.s4_dropout}")

    @property
    def fs(self) -> float:
        """Sampling rate (Hz) the network sees: ``length`` samples per the data's 10 s."""
        return 500.0 * self.length / self.data_length


CONFIGS: dict[str, SSSDConfig] = {
    # Alcaraz & Strodthoff 2023, config_SSSD_ECG.json: 36 blocks of 256 channels, S4 state 64, T = 200.
    "paper": SSSDConfig(),
    # CPU smoke runs: 4 blocks of 64 channels.
    "small": SSSDConfig(res_channels=64, skip_channels=64, num_res_layers=4, step_embed_in=32, step_embed_mid=128,
                        step_embed_out=128, label_embed_dim=32, s4_d_state=16),
    # Unit tests only.
    "tiny": SSSDConfig(res_channels=16, skip_channels=16, num_res_layers=2, step_embed_in=16, step_embed_mid=32,
                       step_embed_out=32, label_embed_dim=8, s4_d_state=8),
}


def get_config(name: str, **overrides: Any) -> SSSDConfig:
    """Copy of the named preset with field overrides applied and validated.

    A ``length`` override without explicit ``dt_min``/``dt_max`` scales the S4 time-step range by
    1000 / length, so that the kernels span the same seconds as the authors' 100 Hz ones (``length=5000``:
    dt in [2e-4, 0.02]).
    """
    if name not in CONFIGS:
        raise ValueError(f"unknown SSSD config {name!r}; available: {', '.join(sorted(CONFIGS))}")
    known = {f.name for f in fields(SSSDConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown SSSDConfig override(s) {unknown}; valid keys are: {', '.join(sorted(known))}")
    if "length" in overrides and "dt_min" not in overrides and "dt_max" not in overrides:
        scale = 1000 / overrides["length"]
        overrides = {**overrides, "dt_min": DT_RANGE_AT_1000[0] * scale, "dt_max": DT_RANGE_AT_1000[1] * scale}
    return replace(CONFIGS[name], **overrides)
