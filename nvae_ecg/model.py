"""The conditional NVAE of cNVAE-ECG: a class-conditioned hierarchical VAE for 8-lead ECGs, in 1-D or 2-D.

Architecture (NVAE model.py, Vahdat & Kautz 2020 Sec. 3 and Fig. 2, in 1-D as in
paper Sec. III): stem conv -> pre-process blocks (residual cells, each block
ending with a down cell) -> bottom-up encoder tower over ``num_latent_scales``
scales -> top-down decoder tower that, group by group, forms the prior from the
decoder state and the posterior from the encoder feature combined with that
state -> post-process blocks (each starting with an up cell) -> ELU + conv to
the parameters of the 8-lead discretised logistic mixture
(``nvae_ecg.distributions.DiscMixLogistic8``).

Class conditioning (paper Sec. III-B): the learned top-of-hierarchy feature map
(NVAE's ``prior_ftr0``) is one tensor per class, ``H`` of shape
(num_classes, C_top, L_top); a record's feature map is the sum over its active
classes, ``h = einsum('bk,kcl->bcl', y, H)``. The encoder sees the same code:
``h`` is average-pooled over its length, projected to the stem's channels by a
1x1 convolution and added (broadcast over time) to the stem output. This
follows the authors' ``model_conditional_1d_ultra.py`` (``add_label``), which
derives the encoder embedding from the summed ``prior_ftr0`` with a conv whose
kernel spans the whole top length; pooling + 1x1 conv is the same kind of linear
map of ``y`` with far fewer parameters and no dependence on the top length.

Lengths: the network runs at ``cfg.padded_length``, ``cfg.length`` rounded up to
a multiple of 2^(num_preprocess_blocks + num_latent_scales - 1) by replicating
the last sample (in [-1, 1] space) at the right end. The output is cropped back
to ``cfg.length``, so the likelihood covers only the real samples (the decoder
factorises over time, so dropping the padded positions marginalises them out
exactly) and a sampled ECG has exactly ``cfg.length`` samples.

2-D variant (``cfg.representation == "stft"``, 2D-cNVAE-ECG, paper Sec. III-A):
the same code builds every cell, combiner, sampler and tower with ``ndim=2``
(``nvae_ecg.neural_operations``). The model still takes and returns 8-lead
signals in [0, 1]: ``forward`` maps x to its normalised (16, F, T) spectrogram
(``nvae_ecg.stft.SpectrogramTransform``, module ``spectrogram``, whose
normalisation buffers are fitted on the training split and saved with the
weights), pads the grid once to multiples of the total down-sampling factor on
both axes (replicating the last row/column) and crops the output back to
(F, T); ``decoder_output`` is a per-entry Gaussian wrapped so that its
``log_prob`` takes signals and its ``sample`` returns signals through the exact
inverse STFT. Class conditioning is the same, with 2-D per-class maps H of shape
(num_classes, C_top, F_top, T_top).

Demographic conditioning (an extension, ``cfg.condition`` ``demographics`` or ``both``; the paper's is
``classes``): the 4-d vector of :mod:`nvae_ecg.demographics` (age z-score, age missing, male, female) goes through
a learned ``Linear(4, C_top)``, is broadcast over the top grid and summed into ``h``, so it enters the decoder top
and the encoder stem (through the same pooling + 1x1 conv) exactly where the class code does. With
``demographics`` alone the per-class table is replaced by one learned unconditional map (NVAE's ``prior_ftr0``).

Why one file above 500 lines: the model is one object whose towers share their bookkeeping (scales, groups,
the per-group prior/posterior combiners, padding and cropping); split, each piece would need the others' indices.
NVAE's own ``model.py`` keeps the same in one file.

Example::

    python -c "import torch; from nvae_ecg.config import get_config; from nvae_ecg.model import AutoEncoder; from nvae_ecg.run import count_parameters; m = AutoEncoder(get_config('tiny', length=500)); print(count_parameters(m), m.sample(torch.eye(9)[:2]).shape)"
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from nvae_ecg.config import ModelConfig
from nvae_ecg.demographics import CONDITION_DIM
from nvae_ecg.distributions import PARAMS_PER_MIXTURE, DiagonalGaussian, DiscMixLogistic8, Normal
from nvae_ecg.neural_operations import (
    CHANNEL_MULT,
    Cell,
    ELU,
    DecCombinerCell,
    EncCombinerCell,
    WeightNormConv,
    batched_weight_norm,
    conv_nd,
    group_by_weight_shape,
    normalized_weights_batched,
)
from nvae_ecg.rhythm import MAP_CHANNELS, RhythmModel, maps_from_signals
from nvae_ecg.run import count_parameters  # noqa: F401  (re-exported: sizes of models built here)
from nvae_ecg.stft import SpectrogramLikelihood, SpectrogramTransform


class VAEOutput(NamedTuple):
    """What ``AutoEncoder.forward`` returns (NVAE's 5-tuple, named)."""

    logits: torch.Tensor            # (B, 33 * M, L) decoder parameters, cropped to L; 2-D: (B, 32, F, T)
    log_q: Optional[torch.Tensor]   # (B,) sum of log q(z|x) over all groups (None: forward(log_probs=False))
    log_p: Optional[torch.Tensor]   # (B,) sum of log p(z) over all groups (None: forward(log_probs=False))
    kl_all: list[torch.Tensor]      # per group (decoder order): (B,) KL summed over channels and positions
    kl_diag: list[torch.Tensor]     # per group: (num_latent_per_group,) KL summed over positions, mean over batch


def groups_per_scale(num_scales: int, num_groups_per_scale: int, ada_groups: bool,
                     min_groups: int = 1, divider: int = 2) -> list[int]:
    """Latent groups per scale from high to low resolution (NVAE utils.groups_per_scale)."""
    out, n = [], num_groups_per_scale
    for _ in range(num_scales):
        out.append(n)
        if ada_groups:
            n = max(min_groups, n // divider)
    return out


class AutoEncoder(nn.Module):
    """Conditional NVAE over 8-lead ECGs, 1-D on signals or 2-D on spectrograms (see the module docstring)."""

    def __init__(self, cfg: ModelConfig, likelihood: Optional[Callable[[torch.Tensor], object]] = None) -> None:
        super().__init__()
        self.cfg = cfg
        # Decoder distribution of the logits (decoder_output); None: DiscMixLogistic8 (1-D) / SpectrogramLikelihood
        # (2-D). Settable after construction; the benchmark's "original" mode puts the authors' mixture here.
        self.likelihood = likelihood
        self.ndim = nd = cfg.ndim
        self.num_latent_scales = cfg.num_latent_scales
        self.groups_per_scale = groups_per_scale(cfg.num_latent_scales, cfg.num_groups_per_scale,
                                                 cfg.ada_groups, cfg.min_groups_per_scale)
        self.num_groups = sum(self.groups_per_scale)
        self.padded_shape = cfg.padded_shape
        self.padded_length = self.padded_shape[-1]
        pre = cfg.num_preprocess_blocks
        scales = cfg.num_latent_scales
        top_mult = CHANNEL_MULT ** (pre + scales - 1)
        self.top_shape = tuple(n // cfg.total_downsampling for n in self.padded_shape)
        self.top_length = self.top_shape[-1]
        top_channels = cfg.num_channels_dec * top_mult
        arch, se = cfg.arch_instance, cfg.use_se
        c_enc, c_dec, c_z = cfg.num_channels_enc, cfg.num_channels_dec, cfg.num_latent_per_group
        # Index helpers fixed at build time, so that forward has no per-call shape logic: spatial axes, the
        # equation of the class code, the crop of the padded output back to the modelled shape.
        self._spatial_dims = tuple(range(2, 2 + nd))
        self._group_dims = (1,) + self._spatial_dims
        self._class_eq = "bk,kcl->bcl" if nd == 1 else "bk,kcfl->bcfl"
        self._crop = (Ellipsis,) + tuple(slice(0, n) for n in cfg.model_shape)
        # F.pad amounts (last axis first) from the modelled shape up to the padded shape: (0, pad) per axis.
        self._pad_amounts = [a for n, p in zip(reversed(cfg.model_shape), reversed(self.padded_shape))
                             for a in (0, p - n)]

        # Per-class top feature maps (NVAE prior_ftr0, uniform init as there); paper Sec. III-B. Conditioned on
        # demographics alone, one unconditional map (NVAE's own prior_ftr0) keeps the learned spatial start.
        if cfg.uses_classes:
            self.class_features_table = nn.Parameter(torch.rand(cfg.num_classes, top_channels, *self.top_shape))
        else:
            self.prior_ftr0 = nn.Parameter(torch.rand(1, top_channels, *self.top_shape))

        # ---- encoder --------------------------------------------------------------------------------------
        self.stem = conv_nd(nd, cfg.model_channels, c_enc, 3, padding=1, bias=True)
        self.class_to_enc = conv_nd(nd, top_channels, c_enc, 1, bias=True)
        pre_cells, mult = [], 1
        for _ in range(pre):
            for c in range(cfg.num_preprocess_cells):
                if c == cfg.num_preprocess_cells - 1:
                    pre_cells.append(Cell(c_enc * mult, c_enc * mult * CHANNEL_MULT, "down", arch, se, ndim=nd))
                    mult *= CHANNEL_MULT
                else:
                    pre_cells.append(Cell(c_enc * mult, c_enc * mult, "normal", arch, se, ndim=nd))
        self.pre_process = nn.Sequential(*pre_cells)

        # Encoder tower, high to low resolution; groups_per_scale[s] groups at encoder scale s.
        self.enc_cells = nn.ModuleList()
        self.enc_combiners = nn.ModuleList()
        self.enc_down = nn.ModuleList()
        for s in range(scales):
            for g in range(self.groups_per_scale[s]):
                self.enc_cells.append(nn.Sequential(*[Cell(c_enc * mult, c_enc * mult, "normal", arch, se, ndim=nd)
                                                      for _ in range(cfg.num_cell_per_cond_enc)]))
                if not (s == scales - 1 and g == self.groups_per_scale[s] - 1):
                    # The topmost group's posterior comes from enc0 alone, so it has no combiner.
                    self.enc_combiners.append(EncCombinerCell(c_enc * mult, c_dec * mult, ndim=nd))
            if s < scales - 1:
                self.enc_down.append(Cell(c_enc * mult, c_enc * mult * CHANNEL_MULT, "down", arch, se, ndim=nd))
                mult *= CHANNEL_MULT
        self.enc0 = nn.Sequential(ELU(), conv_nd(nd, c_enc * mult, c_enc * mult, 1, bias=True), ELU())

        # ---- samplers (decoder order: lowest resolution first) --------------------------------------------
        self.enc_sampler = nn.ModuleList()
        self.dec_sampler = nn.ModuleList()
        for s in range(scales):
            for g in range(self.groups_per_scale[scales - s - 1]):
                self.enc_sampler.append(conv_nd(nd, c_enc * mult, 2 * c_z, 3, padding=1, bias=True))
                if not (s == 0 and g == 0):  # the top group's prior is a fixed standard Normal
                    self.dec_sampler.append(nn.Sequential(ELU(), conv_nd(nd, c_dec * mult, 2 * c_z, 1, bias=True)))
            mult //= CHANNEL_MULT if s < scales - 1 else 1

        # ---- decoder ----------------------------------------------------------------------------------------
        mult = top_mult
        self.dec_cells = nn.ModuleList()
        self.dec_combiners = nn.ModuleList()
        self.dec_up = nn.ModuleList()
        for s in range(scales):
            for g in range(self.groups_per_scale[scales - s - 1]):
                if not (s == 0 and g == 0):
                    self.dec_cells.append(nn.Sequential(*[Cell(c_dec * mult, c_dec * mult, "normal", arch, se, ndim=nd)
                                                          for _ in range(cfg.num_cell_per_cond_dec)]))
                self.dec_combiners.append(DecCombinerCell(c_dec * mult, c_z, ndim=nd))
            if s < scales - 1:
                self.dec_up.append(Cell(c_dec * mult, c_dec * mult // CHANNEL_MULT, "up", arch, se, ndim=nd))
                mult //= CHANNEL_MULT
        post_cells = []
        for _ in range(cfg.num_postprocess_blocks):
            for c in range(cfg.num_postprocess_cells):
                if c == 0:
                    post_cells.append(Cell(c_dec * mult, c_dec * mult // CHANNEL_MULT, "up", arch, se, ndim=nd))
                    mult //= CHANNEL_MULT
                else:
                    post_cells.append(Cell(c_dec * mult, c_dec * mult, "normal", arch, se, ndim=nd))
        self.post_process = nn.Sequential(*post_cells)
        # Beat-phase conditioning (cfg.rhythm, nvae_ecg.rhythm): the map enters the encoder at the stem and the
        # decoder at the start of every scale (average-pooled to its length) and again at full resolution.
        self.rhythm_model: Optional[RhythmModel] = None
        if cfg.rhythm:
            self.rhythm_model = RhythmModel(cfg.num_classes)
            self.rhythm_to_enc = conv_nd(nd, MAP_CHANNELS, c_enc, 3, padding=1, bias=True)
            dec_channels = [c_dec * top_mult // CHANNEL_MULT ** sc for sc in range(scales)] + [c_dec]
            self.rhythm_to_dec = nn.ModuleList(conv_nd(nd, MAP_CHANNELS, c, 1, bias=True) for c in dec_channels)
            self._rhythm_pool = [cfg.total_downsampling // 2 ** sc for sc in range(scales)] + [1]
        if mult != 1:  # guaranteed by ModelConfig (equal pre/post blocks); guards future edits
            raise RuntimeError(f"decoder ends at channel multiplier {mult}, expected 1")
        # 1-D: the 8-lead logistic mixture; 2-D: mean and log-scale of a Gaussian per spectrogram entry.
        out_channels = PARAMS_PER_MIXTURE * cfg.num_mixture_dec if nd == 1 else 2 * cfg.model_channels
        # Zero padding here shifts the output at the first and last sample (the conv sees 0 for a missing neighbour
        # and nothing downstream can undo it: a spike at both ends of every lead); "replicate" repeats the edge.
        if cfg.output_padding == "replicate":
            pad = nn.ReplicationPad1d(1) if nd == 1 else nn.ReplicationPad2d(1)
            self.output_layer = nn.Sequential(ELU(), pad, conv_nd(nd, c_dec, out_channels, 3, bias=True))
        else:
            self.output_layer = nn.Sequential(ELU(), conv_nd(nd, c_dec, out_channels, 3, padding=1, bias=True))
        # The signal <-> normalised spectrogram map of the 2-D variant (no parameters; normalisation buffers).
        self.spectrogram: Optional[SpectrogramTransform] = None
        if cfg.representation == "stft":
            self.spectrogram = SpectrogramTransform(cfg.length, cfg.stft_n_fft, cfg.stft_hop_length,
                                                    cfg.stft_win_length)

        # Demographic conditioning (cfg.condition demographics/both): a linear map of the 4-d vector to the top
        # channels, broadcast over the top grid and summed into h, so it reaches the decoder top and (through
        # class_to_enc) the encoder input exactly where the class code does. Built last: a `classes` model keeps
        # the parameters and the initialisation RNG stream it had before this option existed.
        self.demographics_to_top: Optional[nn.Linear] = None
        if cfg.uses_demographics:
            self.demographics_to_top = nn.Linear(CONDITION_DIM, top_channels)
        # Weight-normalised convs grouped by weight shape (a plain list, not registered): forward normalises each
        # group's weights in one batch of ops instead of a few ops per layer (thousands of layers in `paper`).
        self._conv_groups = group_by_weight_shape(m for m in self.modules() if isinstance(m, WeightNormConv))
        # Sampling runs the decoder alone: normalising the encoder's weights too would double its weight passes.
        decoder = (self.dec_cells, self.dec_sampler, self.dec_combiners, self.dec_up, self.post_process,
                   self.output_layer) + ((self.rhythm_to_dec,) if cfg.rhythm else ())
        self._dec_conv_groups = group_by_weight_shape(m for part in decoder for m in part.modules()
                                                      if isinstance(m, WeightNormConv))
        # False: every conv normalises its own weight per call, as NVAE and the authors' code do (benchmark reference).
        self.batch_weight_norm = True
        # Power-iteration state of spectral_norm_parallel, keyed by weight shape (NVAE sr_u / sr_v).
        self._sr_u: dict[tuple[int, ...], torch.Tensor] = {}
        self._sr_v: dict[tuple[int, ...], torch.Tensor] = {}
        self.sn_first_iters = 30
        self.sn_iters = 1

    # ---- helpers -------------------------------------------------------------------------------------------------
    def class_features(self, y: torch.Tensor) -> torch.Tensor:
        """Top feature map h (B, C_top, *top_shape) of multi-hot y: the sum of the active classes' maps."""
        table = self.class_features_table
        return torch.einsum(self._class_eq, y.to(table.dtype), table)

    def top_features(self, y: torch.Tensor, demographics: Optional[torch.Tensor]) -> torch.Tensor:
        """Conditioned top map h (B, C_top, *top_shape): class maps and/or demographic projection (cfg.condition)."""
        if self.cfg.uses_classes:
            h = self.class_features(y)
        else:
            h = self.prior_ftr0.expand(y.shape[0], *self.prior_ftr0.shape[1:])
        if self.demographics_to_top is not None:
            d = self.demographics_to_top(demographics.to(self.demographics_to_top.weight.dtype))
            h = h + d.reshape(*d.shape, *([1] * self.ndim))
        return h

    def _check_demographics(self, demographics: Optional[torch.Tensor], batch: int) -> Optional[torch.Tensor]:
        """The (B, 4) demographic vectors on the model's device; errors when missing/superfluous or misshapen."""
        if self.demographics_to_top is None:
            if demographics is not None:
                raise ValueError(f"demographics were given but this model has condition={self.cfg.condition!r} "
                                 "(trained without demographics)")
            return None
        if demographics is None:
            raise ValueError(f"this model has condition={self.cfg.condition!r}: pass demographics, (B, "
                             f"{CONDITION_DIM}) vectors of nvae_ecg.demographics.condition_matrix")
        if tuple(demographics.shape) != (batch, CONDITION_DIM):
            raise ValueError(f"demographics must have shape ({batch}, {CONDITION_DIM}) (age z, age missing, male, "
                             f"female), got {tuple(demographics.shape)}")
        return demographics.to(self.demographics_to_top.weight.device)

    def _check_y(self, y: torch.Tensor, batch: Optional[int]) -> None:
        k = self.cfg.num_classes
        if y.dim() != 2 or y.shape[1] != k or (batch is not None and y.shape[0] != batch):
            want = f"({batch if batch is not None else 'B'}, {k})"
            raise ValueError(f"class labels y must have shape {want} (multi-hot float), got {tuple(y.shape)}")

    def _check_x(self, x: torch.Tensor) -> None:
        want = (self.cfg.num_input_channels, self.cfg.length)
        if x.dim() != 3 or tuple(x.shape[1:]) != want:
            raise ValueError(
                f"x must have shape (B, {want[0]}, {want[1]}) (leads I, III, V1..V6 scaled to [0, 1], "
                f"cfg.length={self.cfg.length}), got {tuple(x.shape)}; resample/crop the ECG or build the model "
                "with a matching ModelConfig.length"
            )

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """The network input of signals x (B, 8, L) in [0, 1], padded to ``padded_shape`` by replication.

        1-D: x mapped to [-1, 1], right-padded. 2-D: the normalised spectrogram, padded at high frequencies and
        late frames.
        """
        if self.spectrogram is None:
            x = 2.0 * x - 1.0
        else:
            x = self.spectrogram(x)
        if any(self._pad_amounts):
            x = F.pad(x, self._pad_amounts, mode="replicate")
        return x

    def _rhythm_input(self, rhythm: Optional[torch.Tensor], batch: int, x: Optional[torch.Tensor] = None,
                      y: Optional[torch.Tensor] = None,
                      generator: Optional[torch.Generator] = None) -> Optional[torch.Tensor]:
        """The padded rhythm map (B, MAP_CHANNELS, padded_length): given, detected in x, or drawn for y; None without cfg.rhythm."""
        if self.rhythm_model is None:
            if rhythm is not None:
                raise ValueError("a rhythm map was given but this model has cfg.rhythm=False")
            return None
        if rhythm is None:
            rhythm = (maps_from_signals(x) if x is not None
                      else self.rhythm_model.sample_maps(y, self.cfg.length, generator=generator))
        want = (batch, MAP_CHANNELS, self.cfg.length)
        if tuple(rhythm.shape) != want:
            raise ValueError(f"rhythm map must have shape {want} (nvae_ecg.rhythm.phase_map), got {tuple(rhythm.shape)}")
        r = rhythm.to(device=self.stem.weight.device, dtype=self.stem.weight.dtype)
        return F.pad(r, self._pad_amounts, mode="replicate") if any(self._pad_amounts) else r

    def _add_rhythm(self, s: torch.Tensor, r: Optional[torch.Tensor], level: int) -> torch.Tensor:
        """s plus the rhythm map's projection at decoder level (scale index, or num_latent_scales: full length)."""
        if r is None:
            return s
        k = self._rhythm_pool[level]
        return s + self.rhythm_to_dec[level](F.avg_pool1d(r, k, k) if k > 1 else r)

    def decoder_output(self, logits: torch.Tensor):
        """The decoder distribution of (cropped) logits: DiscMixLogistic8 (1-D) or SpectrogramLikelihood (2-D).

        Both take signals (B, 8, L) in [0, 1] in ``log_prob`` and return them from ``sample``/``mean``; a
        ``likelihood`` given to the constructor (or set on the model) replaces them.
        """
        if self.likelihood is not None:
            return self.likelihood(logits)
        if self.spectrogram is None:
            return DiscMixLogistic8(logits, self.cfg.num_mixture_dec, num_bits=self.cfg.num_x_bits)
        return SpectrogramLikelihood(DiagonalGaussian(logits, self.cfg.model_channels,
                                                      self.spectrogram.mask.unsqueeze(-1)), self.spectrogram)

    # ---- inference + generation ----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, y: torch.Tensor, log_probs: bool = True,
                rhythm: Optional[torch.Tensor] = None, demographics: Optional[torch.Tensor] = None) -> VAEOutput:
        """Encode x (B, 8, L) in [0, 1] with classes y (B, K), sample q, decode; KL terms per group (both ndim).

        ``log_probs=False`` skips log q(z|x) and log p(z) (``None`` in the output), which only the importance-
        weighted NLL needs; the training loss uses the analytic KL. With ``cfg.rhythm`` the rhythm map
        (B, MAP_CHANNELS, L) is ``rhythm`` or, by default, the one of the R peaks detected in x. With ``cfg.condition``
        demographics or both, ``demographics`` (B, 4) is required (and refused otherwise).
        """
        self._check_x(x)
        self._check_y(y, x.shape[0])
        c = self._check_demographics(demographics, x.shape[0])
        r = self._rhythm_input(rhythm, x.shape[0], x=x)
        with batched_weight_norm(self._conv_groups if self.batch_weight_norm else ()):
            return self._forward(x, y, log_probs, r, c)

    def _forward(self, x: torch.Tensor, y: torch.Tensor, log_probs: bool, r: Optional[torch.Tensor],
                 c: Optional[torch.Tensor] = None) -> VAEOutput:
        h = self.top_features(y, c)
        x = x.to(self.stem.weight.dtype)

        # Bottom-up pass (NVAE AutoEncoder.forward); the class code is added to the stem output.
        s = self.stem(self._pad(x)) + self.class_to_enc(h.mean(dim=self._spatial_dims, keepdim=True))
        if r is not None:
            s = s + self.rhythm_to_enc(r)
        s = self.pre_process(s)
        enc_feats = []
        gi = 0
        for sc in range(self.num_latent_scales):
            for _ in range(self.groups_per_scale[sc]):
                s = self.enc_cells[gi](s)
                if gi < self.num_groups - 1:
                    enc_feats.append(s)  # consumed by this group's combiner on the way down
                gi += 1
            if sc < self.num_latent_scales - 1:
                s = self.enc_down[sc](s)

        # Top group: q from enc0, p = N(0, I).
        mu_q, log_sig_q = torch.chunk(self.enc_sampler[0](self.enc0(s)), 2, dim=1)
        q = Normal(mu_q, log_sig_q)
        z = q.sample()
        p = Normal.standard(z)
        qs, ps, zs = [q], [p], [z]

        # Top-down pass; decoder group j >= 1 uses encoder feature / combiner number T-1-j (NVAE reverses them).
        s = h
        j = 0
        for sc in range(self.num_latent_scales):
            s = self._add_rhythm(s, r, sc)
            for _ in range(self.groups_per_scale[self.num_latent_scales - sc - 1]):
                if j > 0:
                    s = self.dec_cells[j - 1](s)
                    mu_p, log_sig_p = torch.chunk(self.dec_sampler[j - 1](s), 2, dim=1)
                    e = self.num_groups - 1 - j
                    ftr = self.enc_combiners[e](enc_feats[e], s)
                    mu_q, log_sig_q = torch.chunk(self.enc_sampler[j](ftr), 2, dim=1)
                    # Residual posterior (NVAE Sec. 3.2, res_dist): q is parameterised relative to p.
                    if self.cfg.res_dist:
                        q = Normal(mu_p + mu_q, log_sig_p + log_sig_q)
                    else:
                        q = Normal(mu_q, log_sig_q)
                    z = q.sample()
                    p = Normal(mu_p, log_sig_p)
                    qs.append(q)
                    ps.append(p)
                    zs.append(z)
                s = self.dec_combiners[j](s, z)
                j += 1
            if sc < self.num_latent_scales - 1:
                s = self.dec_up[sc](s)
        s = self._add_rhythm(self.post_process(s), r, self.num_latent_scales)
        logits = self.output_layer(s)[self._crop]

        kl_all, kl_diag = [], []
        log_q = log_p = 0.0 if log_probs else None
        for q, p, z in zip(qs, ps, zs):
            kl = q.kl(p)                                        # B, C_z, *spatial (float32 or wider)
            kl_diag.append(kl.sum(dim=self._spatial_dims).mean(dim=0))
            kl_all.append(kl.sum(dim=self._group_dims))
            if log_probs:
                log_q = log_q + q.log_p(z).sum(dim=self._group_dims)
                log_p = log_p + p.log_p(z).sum(dim=self._group_dims)
        return VAEOutput(logits, log_q, log_p, kl_all, kl_diag)

    def sample_logits(self, y: torch.Tensor, t: float = 1.0, rhythm: Optional[torch.Tensor] = None,
                      generator: Optional[torch.Generator] = None,
                      demographics: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Decoder logits (B, 33 * M, cfg.length), 2-D (B, 32, F, T), for z drawn from the prior at temperature t.

        With ``cfg.rhythm`` the rhythm map is ``rhythm`` or one drawn from the model's per-class rhythm statistics
        (with ``generator``, a CPU torch.Generator, or the global RNG). A model conditioned on demographics needs
        ``demographics`` (B, 4), the target vectors (:func:`nvae_ecg.demographics.condition_matrix`).
        """
        self._check_y(y, None)
        if not t > 0:
            raise ValueError(f"sampling temperature must be > 0, got {t}")
        c = self._check_demographics(demographics, y.shape[0])
        r = self._rhythm_input(rhythm, y.shape[0], y=y, generator=generator)
        with batched_weight_norm(self._dec_conv_groups if self.batch_weight_norm else ()):
            return self._sample_logits(y, t, r, c)

    def _sample_logits(self, y: torch.Tensor, t: float, r: Optional[torch.Tensor] = None,
                       c: Optional[torch.Tensor] = None) -> torch.Tensor:
        s = self.top_features(y, c)
        z_shape = (y.shape[0], self.cfg.num_latent_per_group, *self.top_shape)
        z = Normal.standard(s.new_zeros(z_shape), temp=t).sample()
        j = 0
        for sc in range(self.num_latent_scales):
            s = self._add_rhythm(s, r, sc)
            for _ in range(self.groups_per_scale[self.num_latent_scales - sc - 1]):
                if j > 0:
                    s = self.dec_cells[j - 1](s)
                    mu_p, log_sig_p = torch.chunk(self.dec_sampler[j - 1](s), 2, dim=1)
                    z = Normal(mu_p, log_sig_p, temp=t).sample()
                s = self.dec_combiners[j](s, z)
                j += 1
            if sc < self.num_latent_scales - 1:
                s = self.dec_up[sc](s)
        s = self._add_rhythm(self.post_process(s), r, self.num_latent_scales)
        return self.output_layer(s)[self._crop]

    def sample(self, y: torch.Tensor, t: float = 1.0, rhythm: Optional[torch.Tensor] = None,
               demographics: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Generate ECGs (B, 8, cfg.length) in [0, 1] for classes y (and demographics); t scales all noise."""
        return self.decoder_output(self.sample_logits(y, t, rhythm, demographics=demographics)).sample(t)

    # ---- regularisers (NVAE Sec. 3.2 spectral regularisation; model.py) ----------------------------------------
    def batchnorm_loss(self) -> torch.Tensor:
        """Sum over BatchNorm layers of max |gamma| (NVAE AutoEncoder.batchnorm_loss)."""
        by_size: dict[int, list[torch.Tensor]] = {}
        for m in self.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm)) and m.affine:
                by_size.setdefault(m.weight.numel(), []).append(m.weight)
        # Layers with the same width are stacked so the loss costs one reduction per width.
        total = self.stem.weight.new_zeros(())
        for ws in by_size.values():
            total = total + torch.stack(ws).abs().amax(dim=1).sum()
        return total

    def spectral_norm_parallel(self) -> torch.Tensor:
        """Sum of the largest singular values of all weight-normalised conv weights (NVAE spectral regulariser).

        Weights are grouped by shape, reshaped to (C_out, C_in * prod(k)) matrices and handled by batched power
        iteration; the singular-vector estimates persist between calls (``sn_first_iters`` iterations on the first
        call, ``sn_iters`` afterwards) and the returned value is differentiable (u^T W v with u, v fixed).
        """
        total = self.stem.weight.new_zeros(())
        device_type = self.stem.weight.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            for convs in self._conv_groups:
                key = tuple(convs[0].weight.shape)
                wn = normalized_weights_batched(convs).flatten(2)                # G, C_out, C_in * prod(k)
                with torch.no_grad():
                    wd = wn.detach()
                    u, v = self._sr_u.get(key), self._sr_v.get(key)
                    iters = self.sn_iters
                    if u is None or u.shape[0] != wd.shape[0]:
                        gen = torch.Generator().manual_seed(0)
                        u = F.normalize(torch.randn(wd.shape[0], wd.shape[1], generator=gen), dim=1, eps=1e-3)
                        v = F.normalize(torch.randn(wd.shape[0], wd.shape[2], generator=gen), dim=1, eps=1e-3)
                        iters = self.sn_first_iters
                    u, v = u.to(wd), v.to(wd)
                    for _ in range(iters):
                        v = F.normalize(torch.bmm(u.unsqueeze(1), wd).squeeze(1), dim=1, eps=1e-3)
                        u = F.normalize(torch.bmm(wd, v.unsqueeze(2)).squeeze(2), dim=1, eps=1e-3)
                    self._sr_u[key], self._sr_v[key] = u, v
                sigma = torch.bmm(u.unsqueeze(1), torch.bmm(wn, v.unsqueeze(2)))
                total = total + sigma.sum()
        return total
