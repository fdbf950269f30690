"""Model configuration of the conditional 1-D NVAE (cNVAE-ECG) and a registry of named presets.

``ModelConfig`` keeps the flag names of NVAE's ``train.py`` and of the authors'
``scripts/training_conditional.sh`` so that paper hyper-parameters can be read off
directly. Three presets are registered: ``paper`` (paper Table V and the authors'
training script: 12 channels, 4x4 pre/post-processing, 3 latent scales with
20/10/5 groups of 5 latent channels, 20 mixture components), ``small`` (a model
that trains at a few steps per second on two CPU cores at length 5000) and
``tiny`` (unit tests). Every config is validated on construction, so a typo in a
JSON file or a command-line override fails with a message naming the field.

Example::

    python -c "from nvae_ecg.config import get_config; print(get_config('small', length=2500))"
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

#: Residual-cell operation pairs understood by ``nvae_ecg.neural_operations``.
ARCH_INSTANCES = ("res_bnelu", "res_bnswish")


class DictConfig:
    """Dict round trip and field-type checks for the dataclass configs in checkpoints (ModelConfig, GANConfig)."""

    def check_field_types(self) -> None:
        """Reject values whose type does not match the field's annotation (bool is not accepted as a number)."""
        name = type(self).__name__
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("bool", bool):
                ok, what = isinstance(value, bool), "a bool"
            elif f.type in ("int", int):
                # bool is an int subclass; reject it so that `length=True` is not silently 1.
                ok, what = isinstance(value, int) and not isinstance(value, bool), "an int"
            elif f.type in ("float", float):
                ok, what = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
            elif f.type in ("str", str):
                ok, what = isinstance(value, str), "a str"
            else:
                ok, what = True, ""
            if not ok:
                raise ValueError(f"{name}.{f.name} must be {what}, got {value!r}")

    def to_dict(self) -> dict:
        """Plain-dict copy (JSON-serialisable) of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        """Build a config from a dict, rejecting keys that are not fields of the class."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} key(s) {unknown}; valid keys are: {', '.join(sorted(known))}")
        return cls(**dict(d))


@dataclass
class ModelConfig(DictConfig):
    """Hyper-parameters of ``nvae_ecg.model.AutoEncoder`` (NVAE flag names)."""

    num_input_channels: int = 8
    length: int = 5000
    num_classes: int = 9
    num_channels_enc: int = 12
    num_channels_dec: int = 12
    num_preprocess_blocks: int = 4
    num_preprocess_cells: int = 4
    num_postprocess_blocks: int = 4
    num_postprocess_cells: int = 4
    num_latent_scales: int = 3
    num_groups_per_scale: int = 20
    min_groups_per_scale: int = 1
    ada_groups: bool = True
    num_latent_per_group: int = 5
    num_cell_per_cond_enc: int = 4
    num_cell_per_cond_dec: int = 4
    num_mixture_dec: int = 20
    num_x_bits: int = 8
    arch_instance: str = "res_bnelu"
    use_se: bool = True
    res_dist: bool = True

    def __post_init__(self) -> None:
        self.check_field_types()
        if self.num_input_channels != 8:
            raise ValueError(
                f"ModelConfig.num_input_channels={self.num_input_channels}: the 8-lead logistic mixture "
                "(I, III, V1..V6) needs exactly 8 input channels"
            )
        positive = (
            "length", "num_classes", "num_channels_enc", "num_channels_dec", "num_latent_scales",
            "num_groups_per_scale", "min_groups_per_scale", "num_latent_per_group",
            "num_cell_per_cond_enc", "num_cell_per_cond_dec", "num_mixture_dec", "num_x_bits",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        non_negative = ("num_preprocess_blocks", "num_postprocess_blocks")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"ModelConfig.{name} must be >= 0, got {getattr(self, name)}")
        for blocks, cells in (("num_preprocess_blocks", "num_preprocess_cells"),
                              ("num_postprocess_blocks", "num_postprocess_cells")):
            if getattr(self, blocks) > 0 and getattr(self, cells) < 1:
                raise ValueError(f"ModelConfig.{cells} must be >= 1 when {blocks} > 0")
        if self.num_preprocess_blocks != self.num_postprocess_blocks:
            # Each pre-process block halves the length and each post-process block doubles it.
            raise ValueError(
                "ModelConfig.num_preprocess_blocks and num_postprocess_blocks must be equal "
                f"(got {self.num_preprocess_blocks} and {self.num_postprocess_blocks}), otherwise the "
                "decoder output does not have the input length"
            )
        if self.num_x_bits > 16:
            raise ValueError(f"ModelConfig.num_x_bits must be <= 16, got {self.num_x_bits}")
        if self.arch_instance not in ARCH_INSTANCES:
            raise ValueError(
                f"ModelConfig.arch_instance={self.arch_instance!r} is unknown; choose one of {ARCH_INSTANCES}"
            )

    @property
    def total_downsampling(self) -> int:
        """Length reduction factor between the input and the top of the latent hierarchy."""
        return 2 ** (self.num_preprocess_blocks + self.num_latent_scales - 1)

    @property
    def padded_length(self) -> int:
        """``length`` rounded up to a multiple of ``total_downsampling`` (the length the network sees)."""
        f = self.total_downsampling
        return -(-self.length // f) * f


CONFIGS: dict[str, ModelConfig] = {
    # Paper Table V and the authors' scripts/training_conditional.sh (res_bnelu, SE, res_dist, ada groups).
    "paper": ModelConfig(),
    # CPU-friendly model for smoke training runs at the full length of 5000 samples.
    "small": ModelConfig(
        num_channels_enc=8, num_channels_dec=8,
        num_preprocess_blocks=2, num_preprocess_cells=2,
        num_postprocess_blocks=2, num_postprocess_cells=2,
        num_latent_scales=2, num_groups_per_scale=4, ada_groups=True,
        num_latent_per_group=4, num_cell_per_cond_enc=1, num_cell_per_cond_dec=1,
        num_mixture_dec=3,
    ),
    # Unit tests only.
    "tiny": ModelConfig(
        num_channels_enc=4, num_channels_dec=4,
        num_preprocess_blocks=1, num_preprocess_cells=1,
        num_postprocess_blocks=1, num_postprocess_cells=1,
        num_latent_scales=2, num_groups_per_scale=2, ada_groups=True,
        num_latent_per_group=2, num_cell_per_cond_enc=1, num_cell_per_cond_dec=1,
        num_mixture_dec=2,
    ),
}


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """Copy of the named preset with field overrides applied and validated."""
    if name not in CONFIGS:
        raise ValueError(f"unknown model config {name!r}; available: {', '.join(sorted(CONFIGS))}")
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"unknown ModelConfig override(s) {unknown}; valid keys are: {', '.join(sorted(known))}"
        )
    # replace() re-runs __post_init__, so overrides are validated like any other config.
    return replace(CONFIGS[name], **overrides)
