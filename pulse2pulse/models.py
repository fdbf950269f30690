"""Conditional WaveGAN* and Pulse2Pulse generators and the (optionally projection-conditioned) WaveGAN discriminator.

The architectures follow Thambawita et al. 2021 ("DeepFake electrocardiograms",
repository vlbthambawita/Pulse2Pulse, ``models/wavegan_star.py`` and
``models/pulse2pulse.py``) in the conditional form of the cNVAE-ECG authors' fork
(univanxx/Pulse2Pulse) used for the paper's baselines (Sec. IV-A.3, Tables II/III);
the code here is a re-implementation, not a copy. Both generators emit the 8
independent leads x 5000 samples; their tanh output is mapped from [-1, 1] to the
[0, 1] space of ``nvae_ecg.data.datasets.GeneratorDataset`` (the fork fed the raw
tanh output to the discriminator next to [0, 1] data; see pulse2pulse/README.md).

- ``WaveGANStarGenerator``: noise z ~ U[-1, 1]^latent_dim plus the sum of the
  learned per-class vectors of the active classes -> Linear -> (5d, 2) -> six
  up-sampling blocks (nearest up-sampling, zero padding, Conv1d k=25) with factors
  5, 5, 5, 2, 5, 2: lengths 2 -> 10 -> 50 -> 250 -> 500 -> 2500 -> 5000, widths
  5d, 5d, 3d, d, d/2, d/5, 8.
- ``Pulse2PulseGenerator``: a U-Net on 8 x 5000 noise U[-1, 1] plus the sum of the
  learned per-class 8 x 5000 tensors: six Conv1d k=25 down-sampling blocks with
  strides 2, 5, 2, 5, 5, 5 (5000 -> 2500 -> 500 -> 250 -> 50 -> 10 -> 2, widths d/5,
  d/2, d, 3d, 5d, 5d) and six mirrored up-sampling blocks with skip
  concatenations.
- ``WaveGANDiscriminator``: seven Conv1d k=25 blocks (widths d, 2d, 5d, 10d, 20d,
  25d, 100d; strides 2, 2, 2, 2, 4, 4, 4; leaky ReLU 0.2) with phase shuffle
  (Donahue et al. 2019, Sec. 3.3) after the first six, and a linear critic on the
  flattened features; with ``cond_discriminator='projection'`` the inner product of
  the summed class embeddings with the time-pooled features is added (Miyato &
  Koyama 2018, "cGANs with projection discriminator").

Example::

    python -m pulse2pulse.models --config paper
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from nvae_ecg.run import count_parameters  # also re-exported: sizes of the models built here
from pulse2pulse.config import CONFIGS, MODELS, GANConfig, get_config

KERNEL = 25
#: Up-sampling factors of the WaveGAN* stack (and of the Pulse2Pulse decoder): 2 * 5*5*5*2*5*2 = 5000.
UP_FACTORS = (5, 5, 5, 2, 5, 2)
#: Down-sampling strides of the Pulse2Pulse encoder: 5000 -> 2500 -> 500 -> 250 -> 50 -> 10 -> 2.
DOWN_STRIDES = (2, 5, 2, 5, 5, 5)
#: Discriminator strides and width multipliers of d (WaveGAN discriminator, padding 11).
DISC_STRIDES = (2, 2, 2, 2, 4, 4, 4)
DISC_WIDTHS = (1, 2, 5, 10, 20, 25, 100)
BASE_LENGTH = 2


class UpBlock(nn.Module):
    """Nearest up-sampling by an integer factor, zero padding of k // 2 and a stride-1 Conv1d: length x factor."""

    def __init__(self, in_channels: int, out_channels: int, factor: int, kernel_size: int = KERNEL):
        super().__init__()
        self.factor = int(factor)
        # Padding inside the conv equals the fork's ConstantPad1d(k // 2) followed by an unpadded conv.
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=1, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Up-sample (B, C, L) to (B, out, L * factor)."""
        return self.conv(x.repeat_interleave(self.factor, dim=-1))


class PhaseShuffle(nn.Module):
    """Shift each example along time by an integer k ~ U{-n..n} with reflection at the edges (training only).

    WaveGAN (Donahue et al. 2019, Sec. 3.3): it keeps the discriminator from keying
    on the periodic artefacts of up-sampling. Identity in eval mode and for n = 0.
    """

    def __init__(self, shift_factor: int):
        super().__init__()
        self.shift_factor = int(shift_factor)

    def forward(self, x: torch.Tensor, shifts: torch.Tensor | None = None) -> torch.Tensor:
        """Shuffle (B, C, L); ``shifts`` (B,) overrides the random draw (for tests)."""
        n = self.shift_factor
        if (not self.training or n == 0) and shifts is None:
            return x
        b, c, length = x.shape
        if length <= n:
            raise ValueError(f"phase shuffle by up to {n} needs more than {n} time steps, got {length}")
        if shifts is None:
            # Drawn on the tensor's device: no host synchronisation on CUDA.
            shifts = torch.randint(-n, n + 1, (b,), device=x.device)
        t = torch.arange(length, device=x.device)
        idx = t.unsqueeze(0) - shifts.to(x.device).long().unsqueeze(1)
        # Reflection without repeating the edge sample, as F.pad(mode='reflect').
        idx = idx.abs()
        idx = torch.where(idx > length - 1, 2 * (length - 1) - idx, idx)
        return x.gather(2, idx.unsqueeze(1).expand(b, c, length))


class _ConditionalGenerator(nn.Module):
    """Shared interface: ``noise(n)``, ``forward(z, y)`` -> (B, 8, 5000) in [0, 1], ``sample(y)``."""

    cfg: GANConfig

    def noise(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise of ``n`` examples, uniform in [-1, 1] as in the reference implementations."""
        shape = (n, *self.noise_shape)
        return torch.rand(shape, device=device, generator=generator) * 2.0 - 1.0

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """Shape of one example's noise (without the batch axis)."""
        raise NotImplementedError

    def sample(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw noise and generate one ECG per row of the multi-hot labels ``y`` (B, C)."""
        z = self.noise(y.shape[0], device=y.device, generator=generator)
        return self(z, y)

    def _check_labels(self, y: torch.Tensor, batch: int) -> torch.Tensor:
        if y.ndim != 2 or y.shape != (batch, self.cfg.num_classes):
            raise ValueError(f"labels must have shape ({batch}, {self.cfg.num_classes}), got {tuple(y.shape)}")
        return y

    @staticmethod
    def to_unit(h: torch.Tensor) -> torch.Tensor:
        """tanh output in [-1, 1] -> the [0, 1] space of the normalised data."""
        return (torch.tanh(h) + 1.0) * 0.5


class WaveGANStarGenerator(_ConditionalGenerator):
    """WaveGAN* (paper Table III): dense layer on noise + summed class vectors, then six up-sampling blocks."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.model_size
        self.widths = (5 * d, 5 * d, 3 * d, d, d // 2, d // 5, cfg.num_channels)
        # One learned latent_dim vector per class, summed over a sample's active classes; the fork
        # initialises it uniformly in [0, 1] (torch.rand).
        self.class_embedding = nn.Parameter(torch.rand(cfg.num_classes, cfg.latent_dim))
        self.fc = nn.Linear(cfg.latent_dim, self.widths[0] * BASE_LENGTH)
        self.blocks = nn.ModuleList(UpBlock(self.widths[i], self.widths[i + 1], f) for i, f in enumerate(UP_FACTORS))
        # The reference initialises only the dense layer with Kaiming-normal weights (convs keep PyTorch's default).
        nn.init.kaiming_normal_(self.fc.weight)

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """(latent_dim,): one noise vector per ECG."""
        return (self.cfg.latent_dim,)

    def condition(self, y: torch.Tensor) -> torch.Tensor:
        """Sum of the class vectors of the active classes: (B, C) -> (B, latent_dim)."""
        return y.to(self.class_embedding.dtype) @ self.class_embedding

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Generate (B, 8, 5000) in [0, 1] from noise z (B, latent_dim) and multi-hot labels y (B, C)."""
        if z.ndim != 2 or z.shape[1] != self.cfg.latent_dim:
            raise ValueError(f"noise must have shape (B, {self.cfg.latent_dim}), got {tuple(z.shape)}")
        y = self._check_labels(y, z.shape[0])
        h = self.fc(z + self.condition(y)).view(z.shape[0], self.widths[0], BASE_LENGTH)
        h = F.relu(h)
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i < len(self.blocks) - 1:
                h = F.relu(h)
        return self.to_unit(h)


class Pulse2PulseGenerator(_ConditionalGenerator):
    """Pulse2Pulse (paper Table II): a 1-D U-Net on 8 x 5000 noise plus summed per-class 8 x 5000 tensors."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.cfg = cfg
        d, c = cfg.model_size, cfg.num_channels
        enc = (c, d // 5, d // 2, d, 3 * d, 5 * d, 5 * d)
        self.enc_widths = enc
        # The fork initialises the per-class conditioning tensors uniformly in [0, 1] (torch.rand).
        self.class_embedding = nn.Parameter(torch.rand(cfg.num_classes, c, cfg.length))
        self.down = nn.ModuleList(nn.Conv1d(enc[i], enc[i + 1], KERNEL, stride=s, padding=KERNEL // 2)
                                  for i, s in enumerate(DOWN_STRIDES))
        # Decoder: block k up-samples the previous output concatenated with the encoder output of the
        # same length (skips for blocks 1..4, as in the fork: conv_5, conv_4, conv_3, conv_2 outputs).
        dec_out = (5 * d, 3 * d, d, d // 2, d // 5, c)
        self.skip_from = (None, 4, 3, 2, 1, None)
        ins = []
        prev = enc[-1]
        for k, out in enumerate(dec_out):
            skip = 0 if self.skip_from[k] is None else enc[self.skip_from[k] + 1]
            ins.append(prev + skip)
            prev = out
        self.up = nn.ModuleList(UpBlock(ins[k], dec_out[k], f) for k, f in enumerate(UP_FACTORS))

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """(8, 5000): one noise signal per ECG."""
        return (self.cfg.num_channels, self.cfg.length)

    def condition(self, y: torch.Tensor) -> torch.Tensor:
        """Sum of the per-class tensors of the active classes: (B, C) -> (B, 8, 5000)."""
        return torch.einsum("bk,kct->bct", y.to(self.class_embedding.dtype), self.class_embedding)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Generate (B, 8, 5000) in [0, 1] from noise z (B, 8, 5000) and multi-hot labels y (B, C)."""
        if z.ndim != 3 or tuple(z.shape[1:]) != self.noise_shape:
            raise ValueError(f"noise must have shape (B, {self.noise_shape[0]}, {self.noise_shape[1]}), "
                             f"got {tuple(z.shape)}")
        y = self._check_labels(y, z.shape[0])
        h = z + self.condition(y)
        feats = []
        for conv in self.down:
            # The fork uses F.leaky_relu's default slope (0.01) in the encoder.
            h = F.leaky_relu(conv(h))
            feats.append(h)
        for k, block in enumerate(self.up):
            if self.skip_from[k] is not None:
                h = torch.cat((h, feats[self.skip_from[k]]), dim=1)
            h = block(h)
            if k < len(self.up) - 1:
                h = F.relu(h)
        return self.to_unit(h)


def disc_lengths(length: int) -> list[int]:
    """Time lengths after each discriminator conv (k=25, padding 11): 5000 -> 2499, 1249, ..., 5."""
    out = []
    for s in DISC_STRIDES:
        length = (length + 2 * 11 - KERNEL) // s + 1
        if length < 1:
            raise ValueError("input too short for the discriminator's seven strided convolutions")
        out.append(length)
    return out


class WaveGANDiscriminator(nn.Module):
    """WaveGAN critic on (B, 8, 5000) in [0, 1]; optionally conditioned by projection (returns (B,) scores)."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.disc_model_size
        widths = [cfg.num_channels] + [m * d for m in DISC_WIDTHS]
        self.convs = nn.ModuleList(nn.Conv1d(widths[i], widths[i + 1], KERNEL, stride=s, padding=11)
                                   for i, s in enumerate(DISC_STRIDES))
        self.shuffles = nn.ModuleList(PhaseShuffle(cfg.shift_factor) for _ in range(len(DISC_STRIDES) - 1))
        self.feature_length = disc_lengths(cfg.length)[-1]
        self.fc = nn.Linear(widths[-1] * self.feature_length, 1)
        self.class_embedding = None
        if cfg.cond_discriminator == "projection":
            self.class_embedding = nn.Parameter(torch.empty(cfg.num_classes, widths[-1]))
            nn.init.normal_(self.class_embedding, std=1.0 / math.sqrt(widths[-1]))
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last convolutional features (B, 100d, L7)."""
        slope = self.cfg.disc_slope
        h = x
        for i, conv in enumerate(self.convs):
            h = F.leaky_relu(conv(h), negative_slope=slope)
            if i < len(self.shuffles):
                h = self.shuffles[i](h)
        return h

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Critic scores (B,); ``y`` (B, C) multi-hot is required with the projection discriminator."""
        if x.ndim != 3 or x.shape[1] != self.cfg.num_channels or x.shape[2] != self.cfg.length:
            raise ValueError(f"discriminator input must be (B, {self.cfg.num_channels}, {self.cfg.length}), "
                             f"got {tuple(x.shape)}")
        h = self.features(x)
        # Matrix-vector form of self.fc: same result, but the weight gradient keeps the parameter's memory
        # layout, which DistributedDataParallel's gradient buckets expect.
        out = torch.mv(h.flatten(1), self.fc.weight.squeeze(0).to(h.dtype)) + self.fc.bias.to(h.dtype)
        if self.class_embedding is not None:
            if y is None:
                raise ValueError("the projection discriminator needs the labels y")
            proj = y.to(h.dtype) @ self.class_embedding.to(h.dtype)
            out = out + (proj * h.mean(dim=-1)).sum(dim=1)
        return out


GENERATORS = {"wavegan_star": WaveGANStarGenerator, "pulse2pulse": Pulse2PulseGenerator}


def build_generator(cfg: GANConfig) -> _ConditionalGenerator:
    """The generator named by ``cfg.model``."""
    return GENERATORS[cfg.model](cfg)


def build_discriminator(cfg: GANConfig) -> WaveGANDiscriminator:
    """The WaveGAN discriminator for ``cfg`` (projection-conditioned when cfg.cond_discriminator says so)."""
    return WaveGANDiscriminator(cfg)


def parameter_report(cfg: GANConfig) -> dict[str, int]:
    """Parameter counts of both generators and the discriminator for ``cfg``, built on the meta device (no memory)."""
    out = {}
    with torch.device("meta"):
        for name in MODELS:
            out[name] = count_parameters(build_generator(GANConfig.from_dict({**cfg.to_dict(), "model": name})))
        for cond in ("none", "projection"):
            d = build_discriminator(GANConfig.from_dict({**cfg.to_dict(), "cond_discriminator": cond}))
            out[f"discriminator ({cond})"] = count_parameters(d)
    return out


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description="Print the parameter counts of the GAN baselines.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default="paper", choices=sorted(CONFIGS), help="named configuration")
    p.add_argument("--num_classes", type=int, default=9, help="number of conditioning classes")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    """Print a parameter table."""
    cfg = get_config(args.config, num_classes=args.num_classes)
    print(f"config {args.config}: G d={cfg.model_size}, D d={cfg.disc_model_size}, {cfg.num_classes} classes")
    for name, n in parameter_report(cfg).items():
        print(f"  {name:<26s} {n:>13,d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(parse_args()))
