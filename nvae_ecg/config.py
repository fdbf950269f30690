"""Model configuration of the conditional NVAE (cNVAE-ECG and its 2-D STFT variant) and a registry of named presets.

``ModelConfig`` keeps the flag names of NVAE's ``train.py`` and of the authors'
``scripts/training_conditional.sh`` so that paper hyper-parameters can be read off
directly. ``representation`` selects what the network models: ``signal`` (the
1-D cNVAE-ECG over the 8 independent leads) or ``stft`` (2D-cNVAE-ECG, paper Sec.
III-A: a 2-D NVAE over the normalised (16, F, T) spectrogram of ``nvae_ecg.stft``,
with ``stft_n_fft``/``stft_hop_length``/``stft_win_length``). Presets: ``paper``
(paper Table V and the authors' training script: 12 channels, 4x4
pre/post-processing, 3 latent scales with 20/10/5 groups of 5 latent channels, 20
mixture components), ``small`` (a model that trains at a few steps per second on
two CPU cores at length 5000), ``demo`` (``small`` with one logistic per lead and the beat-phase conditioning of
:mod:`nvae_ecg.rhythm`, what the quickstart trains), ``tiny`` (unit tests), and their 2-D counterparts
``paper2d``, ``small2d`` and ``tiny2d``. ``paper2d`` keeps every Table V value but
uses 2 instead of 4 pre/post-processing blocks: with 4 the 64 x 128 spectrogram
grid would shrink to 4 x 8 at the first latent scale and the hierarchy would hold
3.6k latent variables against the 1-D model's 41k; with 2 it holds 58k (16 x 32,
8 x 16 and 4 x 8 grids), the closest match. Every config is validated on
construction, so a typo in a JSON file or a command-line override fails with a
message naming the field.

Example::

    python -c "from nvae_ecg.config import get_config; print(get_config('small', length=2500))"
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

#: Residual-cell operation pairs understood by ``nvae_ecg.neural_operations``.
ARCH_INSTANCES = ("res_bnelu", "res_bnswish")
#: What the network models: the 8-lead signal (1-D NVAE) or its STFT (2-D NVAE), with their dimensionality.
REPRESENTATIONS = ("signal", "stft")
OUTPUT_PADDINGS = ("zeros", "replicate")
REPRESENTATION_NDIM = {"signal": 1, "stft": 2}
#: What the network is conditioned on: the paper's classes, the demographic vector of nvae_ecg.demographics, or both.
CONDITIONS = ("classes", "demographics", "both")


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
    # 2-D variant (nvae_ecg.stft); the stft_* fields are unused with representation "signal". num_mixture_dec and
    # num_x_bits are unused with "stft" (its decoder is a per-entry Gaussian, nvae_ecg.distributions).
    representation: str = "signal"
    stft_n_fft: int = 126
    stft_hop_length: int = 40
    stft_win_length: int = 126
    # Extension (not in the paper): condition encoder and decoder on a beat-phase map (nvae_ecg.rhythm).
    rhythm: bool = False
    # Padding of the output conv: "zeros" as NVAE and the authors; "replicate" removes the edge artefact.
    output_padding: str = "zeros"
    # Extension (not in the paper): condition on age/sex (nvae_ecg.demographics) instead of or besides the classes.
    condition: str = "classes"

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
        if self.representation not in REPRESENTATIONS:
            raise ValueError(
                f"ModelConfig.representation={self.representation!r} is unknown; choose one of {REPRESENTATIONS}"
            )
        if self.stft_n_fft < 2:
            raise ValueError(f"ModelConfig.stft_n_fft must be >= 2, got {self.stft_n_fft}")
        if not 1 <= self.stft_win_length <= self.stft_n_fft:
            raise ValueError(f"ModelConfig.stft_win_length must be in [1, stft_n_fft={self.stft_n_fft}], "
                             f"got {self.stft_win_length}")
        if not 1 <= self.stft_hop_length <= self.stft_win_length:
            raise ValueError(f"ModelConfig.stft_hop_length must be in [1, stft_win_length={self.stft_win_length}], "
                             f"got {self.stft_hop_length}")
        if self.condition not in CONDITIONS:
            raise ValueError(f"ModelConfig.condition={self.condition!r} is unknown; choose one of {CONDITIONS}")
        if self.output_padding not in OUTPUT_PADDINGS:
            raise ValueError(f"ModelConfig.output_padding={self.output_padding!r} is unknown; choose one of "
                             f"{OUTPUT_PADDINGS}")
        if self.rhythm and self.representation != "signal":
            raise ValueError("ModelConfig.rhythm needs representation='signal' (the beat-phase map is 1-D)")
        if self.representation == "stft" and self.length <= self.stft_n_fft // 2:
            raise ValueError(f"ModelConfig.length={self.length} is too short for a centred STFT with "
                             f"stft_n_fft={self.stft_n_fft} (needs more than {self.stft_n_fft // 2} samples)")

    @property
    def uses_classes(self) -> bool:
        """Whether the class code (the per-class top feature maps) conditions the model."""
        return self.condition in ("classes", "both")

    @property
    def uses_demographics(self) -> bool:
        """Whether the demographic vector (age z-score, age missing, male, female) conditions the model."""
        return self.condition in ("demographics", "both")

    @property
    def total_downsampling(self) -> int:
        """Length reduction factor between the input and the top of the latent hierarchy."""
        return 2 ** (self.num_preprocess_blocks + self.num_latent_scales - 1)

    @property
    def padded_length(self) -> int:
        """``length`` rounded up to a multiple of ``total_downsampling`` (the length the 1-D network sees)."""
        f = self.total_downsampling
        return -(-self.length // f) * f

    @property
    def ndim(self) -> int:
        """Spatial dimensionality of the network: 1 (signal) or 2 (stft)."""
        return REPRESENTATION_NDIM[self.representation]

    @property
    def model_channels(self) -> int:
        """Channels of the modelled tensor: the 8 leads, or their real and imaginary STFT parts (16)."""
        return self.num_input_channels if self.representation == "signal" else 2 * self.num_input_channels

    @property
    def model_shape(self) -> tuple[int, ...]:
        """Spatial shape of the modelled tensor: (length,) or the centred STFT grid (F, T) (stft.stft_shape)."""
        if self.representation == "signal":
            return (self.length,)
        n = self.stft_n_fft
        return (n // 2 + 1, 1 + (self.length + 2 * (n // 2) - n) // self.stft_hop_length)

    @property
    def padded_shape(self) -> tuple[int, ...]:
        """``model_shape`` with each axis rounded up to a multiple of ``total_downsampling`` (the network's grid)."""
        f = self.total_downsampling
        return tuple(-(-n // f) * f for n in self.model_shape)


_CONFIGS_1D: dict[str, ModelConfig] = {
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
# `small` with one logistic per lead instead of a 3-component mixture: with Adam at 3e-3 and warm-ups counted in
# steps it reconstructs the demo ECGs within minutes on CPU, where `small` with the authors' schedule collapses
# (BENCHMARKS.md, "Why cNVAE-ECG learned slowly"); and the beat-phase map of nvae_ecg.rhythm, without which the
# decoder's reach of ~50 samples cannot place beats at a rate (BENCHMARKS.md, "Why the demo had no rhythm").
# And replicate padding of the output conv (no spike at the first and last sample). None is the paper's. The
# quickstart samples from it.
_CONFIGS_1D["demo"] = replace(_CONFIGS_1D["small"], num_mixture_dec=1, rhythm=True, output_padding="replicate")
CONFIGS: dict[str, ModelConfig] = {
    **_CONFIGS_1D,
    # 2D-cNVAE-ECG (paper Sec. III-A): the same presets on the STFT; paper2d with 2 pre/post blocks (module docstring).
    "paper2d": replace(_CONFIGS_1D["paper"], representation="stft", num_preprocess_blocks=2,
                       num_postprocess_blocks=2),
    "small2d": replace(_CONFIGS_1D["small"], representation="stft"),
    "tiny2d": replace(_CONFIGS_1D["tiny"], representation="stft"),
}


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """Copy of the named preset with field overrides applied and validated."""
    if name not in CONFIGS:
        one_d = ", ".join(sorted(_CONFIGS_1D))
        two_d = ", ".join(sorted(set(CONFIGS) - set(_CONFIGS_1D)))
        raise ValueError(f"unknown model config {name!r}; available: {one_d} (1-D signal), {two_d} (2-D STFT)")
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"unknown ModelConfig override(s) {unknown}; valid keys are: {', '.join(sorted(known))}"
        )
    # replace() re-runs __post_init__, so overrides are validated like any other config.
    return replace(CONFIGS[name], **overrides)
