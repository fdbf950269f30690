"""The SSSD-ECG denoiser: a WaveNet-like stack of residual blocks with two S4 layers each, conditioned on the
diffusion step and on the multi-hot label.

Re-implemented after Alcaraz & Strodthoff 2023 (AI4HealthUOL/SSSD-ECG at 324f908, ``src/sssd/models/SSSD_ECG.py``;
no code copied):

- backbone (``SSSD_ECG.py:159-208``): weight-normalised 1x1 conv 8 -> C (C = 256) + ReLU; ``num_res_layers`` (36)
  residual blocks whose skip outputs are summed and scaled by sqrt(1 / 36); output weight-normalised 1x1 conv
  C -> C, ReLU, and a zero-initialised 1x1 conv C -> 8 (so the initial prediction is exactly 0);
- residual block (``:82-108``): h = x + Linear(512 -> C)(step embedding); weight-normalised conv k=3, C -> 2C;
  S4 layer; + Linear(128 -> 2C)(label embedding) as a per-channel bias; S4 layer; gate
  tanh(h[:C]) * sigmoid(h[C:]); weight-normalised 1x1 residual conv, output (x + res) * sqrt(0.5), and a separate
  weight-normalised 1x1 skip conv;
- step embedding: 128-d sinusoidal embedding of the integer step t (their ``calc_diffusion_step_embedding``), two
  Linear layers with swish to 512; label embedding: the multi-hot y times an Embedding(num_classes, 128) weight,
  i.e. the sum of the active classes' vectors.

Weight normalisation keeps the authors' parameters (a gain per output channel besides the direction), which the
published count includes. Their ``kaiming_normal_`` calls come after ``weight_norm`` and set a weight that the
next forward pass recomputes from gain and direction, so they have no effect: the faithful initialisation is
PyTorch's default, used here.

Example::

    python -m sssd_ecg.model --config paper
"""

from __future__ import annotations

import argparse
import math
import sys
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from nvae_ecg.run import count_parameters
from sssd_ecg.config import CONFIGS, SSSDConfig, get_config
from sssd_ecg.s4 import S4Layer, cached_kernels


def step_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of integer diffusion steps t (B,): [sin(t f_j), cos(t f_j)],
    f_j = 10000^(-j / (dim/2 - 1)), j = 0..dim/2-1 (SSSD-ECG ``utils/util.py`` calc_diffusion_step_embedding)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
    arg = t.float().reshape(-1, 1) * freqs
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


def wn_conv(c_in: int, c_out: int, kernel_size: int = 1) -> nn.Module:
    """Weight-normalised Conv1d with 'same' padding (odd kernels) and PyTorch's default initialisation."""
    return weight_norm(nn.Conv1d(c_in, c_out, kernel_size, padding=(kernel_size - 1) // 2))


class ResidualBlock(nn.Module):
    """One SSSD-ECG residual block (see the module docstring); returns (residual output, skip output)."""

    def __init__(self, cfg: SSSDConfig, init_kernels: bool = True):
        super().__init__()
        c = cfg.res_channels
        self.res_channels = c
        self.fc_t = nn.Linear(cfg.step_embed_out, c)
        self.conv = wn_conv(c, 2 * c, kernel_size=3)
        s4 = dict(l_max=cfg.length, d_state=cfg.s4_d_state, dropout=cfg.s4_dropout,
                  bidirectional=cfg.s4_bidirectional, layer_norm=cfg.s4_layernorm, dt_min=cfg.dt_min,
                  dt_max=cfg.dt_max, length_correction=init_kernels)
        self.s4_1 = S4Layer(2 * c, **s4)
        self.fc_label = nn.Linear(cfg.label_embed_dim, 2 * c)
        self.s4_2 = S4Layer(2 * c, **s4)
        self.res_conv = wn_conv(c, c)
        self.skip_conv = wn_conv(c, cfg.skip_channels)

    def forward(self, x: torch.Tensor, label_embed: torch.Tensor, step_embed: torch.Tensor):
        h = x + self.fc_t(step_embed).unsqueeze(-1)
        h = self.s4_1(self.conv(h))
        h = self.s4_2(h + self.fc_label(label_embed).unsqueeze(-1))
        out = torch.tanh(h[:, :self.res_channels]) * torch.sigmoid(h[:, self.res_channels:])
        return (x + self.res_conv(out)) * math.sqrt(0.5), self.skip_conv(out)


class SSSDECG(nn.Module):
    """The noise predictor eps_theta(x_t, y, t): (B, 8, L) noisy signal, (B, K) multi-hot labels, (B,) steps.

    ``init_kernels=False`` skips S4's initial length correction of C (about 45 s for the paper configuration on
    one CPU thread): for a model whose weights are loaded from a checkpoint next, or that is only counted.
    """

    def __init__(self, cfg: SSSDConfig, init_kernels: bool = True):
        super().__init__()
        self.cfg = cfg
        self.init_conv = wn_conv(cfg.num_channels, cfg.res_channels)
        self.embedding = nn.Embedding(cfg.num_classes, cfg.label_embed_dim)
        self.fc_t1 = nn.Linear(cfg.step_embed_in, cfg.step_embed_mid)
        self.fc_t2 = nn.Linear(cfg.step_embed_mid, cfg.step_embed_out)
        self.blocks = nn.ModuleList(ResidualBlock(cfg, init_kernels) for _ in range(cfg.num_res_layers))
        self.final_conv = wn_conv(cfg.skip_channels, cfg.skip_channels)
        self.zero_conv = nn.Conv1d(cfg.skip_channels, cfg.num_channels, 1)
        nn.init.zeros_(self.zero_conv.weight)
        nn.init.zeros_(self.zero_conv.bias)

    def label_embedding(self, y: torch.Tensor) -> torch.Tensor:
        """(B, label_embed_dim): y @ E, the sum of the active classes' vectors (additive in y)."""
        return y.to(self.embedding.weight.dtype) @ self.embedding.weight

    def forward(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        label_embed = self.label_embedding(y)
        step = F.silu(self.fc_t1(step_embedding(t, self.cfg.step_embed_in).to(x.dtype)))
        step = F.silu(self.fc_t2(step))
        h = F.relu(self.init_conv(x))
        skip = None
        for block in self.blocks:
            h, s = block(h, label_embed, step)
            skip = s if skip is None else skip + s
        h = skip * math.sqrt(1.0 / len(self.blocks))
        return self.zero_conv(F.relu(self.final_conv(h)))

    @contextmanager
    def cached_kernels(self):
        """Inside the block every S4 kernel is computed once (see :func:`sssd_ecg.s4.cached_kernels`)."""
        with cached_kernels(self):
            yield self


def build_model(cfg: SSSDConfig, init_kernels: bool = True) -> SSSDECG:
    """The denoiser of ``cfg`` (``init_kernels``: see :class:`SSSDECG`)."""
    return SSSDECG(cfg, init_kernels)


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description="Print the trainable parameter count of the SSSD-ECG denoiser.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default="paper", choices=sorted(CONFIGS), help="named configuration")
    p.add_argument("--num_classes", type=int, default=9,
                   help="number of conditioning classes (the authors' published model: 71 PTB-XL statements)")
    p.add_argument("--length", type=int, default=None, help="samples per ECG seen by the network (S4 l_max)")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    """Print the configuration and ``parameters: N`` (trainable), plus the frozen S4 buffers."""
    overrides = {"num_classes": args.num_classes}
    if args.length is not None:
        overrides["length"] = args.length
    cfg = get_config(args.config, **overrides)
    model = build_model(cfg, init_kernels=False)  # the count does not depend on C's values
    buffers = sum(b.numel() for b in model.buffers())
    print(f"config {args.config}: {cfg.num_res_layers} blocks x {cfg.res_channels} channels, S4 state "
          f"{cfg.s4_d_state}, length {cfg.length} ({cfg.fs:g} Hz), {cfg.num_classes} classes")
    print(f"frozen S4 buffers (A, B, P, dt): {buffers}")
    print(f"parameters: {count_parameters(model)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
