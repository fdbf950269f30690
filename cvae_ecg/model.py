"""The conditional VAE of Sang, Beetz & Grau (ISBI 2022), ported from YulingSang/CVAE_ECG ``vae.py`` to PyTorch.

Source (line numbers: YulingSang/CVAE_ECG at f17e4ab, as read from the indexed copy of those files at 393dbcf).
An ECG is an image of leads x samples with one channel (their ``train.py``:18 reshapes to (12, 400, 1)). Encoder
(``vae.py``:176-217): Conv2D(5, (1, 40), same) -> ELU -> BN -> Conv2D(5, (leads, 1), valid) -> ELU -> BN ->
AvgPool(1, 2) -> flatten, concatenate the condition c, BN, Dense mu and Dense log sigma^2 (10 each), z = mu +
exp(log sigma^2 / 2) eps. Decoder (``vae.py``:219-280): concatenate (z, c) -> BN -> Dense -> reshape ->
UpSampling(1, 2) -> ConvTranspose(5, (leads, 1), valid) -> ELU -> BN -> ConvTranspose(1, (1, 40), same) -> ELU ->
BN. Loss (``vae.py``:68-85, weights 1 and 1): the KL divergence summed over latent dimensions plus the MSE averaged
over all elements, both averaged over the batch as Keras does. Keras defaults are reproduced where PyTorch's
differ: Glorot-uniform weights and zero biases, batch norm momentum 0.99 (PyTorch 0.01) and epsilon 1e-3, and TF
"same" padding, which for an even kernel pads one sample more on the right (19 left / 20 right for k = 40), with
the matching crop of the transposed convolution. Features are flattened in Keras' (height, width, channel) order
so that the dense weights have the layout of theirs. Published configuration: 35,112 trainable parameters, 37,168
with the batch-norm statistics.

Example::

    python -m cvae_ecg.model --config paper
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from torch import nn

from cvae_ecg.config import CONFIGS, CVAEConfig, get_config
from nvae_ecg.run import count_parameters


def tf_same_padding(kernel: int) -> tuple[int, int]:
    """(left, right) padding of TensorFlow's stride-1 "same": the odd sample goes to the right (19/20 for 40)."""
    total = kernel - 1
    return total // 2, total - total // 2


def glorot_init(module: nn.Module) -> None:
    """Keras initialisation: Glorot-uniform kernels, zero biases (batch norms keep gamma 1, beta 0)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            # Glorot depends on fan_in + fan_out only, so PyTorch's transposed-weight layout gives Keras' bound.
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per sample, summed over latent dimensions (``vae.py``:83-85)."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)


def cvae_loss(x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
              kl_weight: float = 1.0, rec_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, KL, MSE): batch mean of the summed KL plus the MSE over all elements (``vae.py``:78-81)."""
    kl = kl_divergence(mu, logvar).mean()
    mse = F.mse_loss(recon, x, reduction="mean")
    return kl_weight * kl + rec_weight * mse, kl, mse


class SameConv1xK(nn.Conv2d):
    """Conv2d with a (1, k) kernel and TF "same" padding along the width (explicit, asymmetric)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int):
        super().__init__(in_ch, out_ch, (1, kernel))
        self.pad = tf_same_padding(kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (*self.pad, 0, 0)))


class SameConvTranspose1xK(nn.ConvTranspose2d):
    """ConvTranspose2d with a (1, k) kernel cropped like TF's stride-1 "same" (the adjoint of :class:`SameConv1xK`).

    The full transposed convolution is k - 1 samples wider; TF drops the left padding of the forward convolution
    (19) at the start and the right padding (20) at the end. PyTorch's ``padding=`` would crop symmetrically.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int):
        super().__init__(in_ch, out_ch, (1, kernel))
        self.pad = tf_same_padding(kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return y[..., self.pad[0]:y.shape[-1] - self.pad[1]]


class CVAE(nn.Module):
    """Encoder q(z | x, c), decoder p(x | z, c) of the CVAE; x is (B, leads, samples), c is (B, condition_dim)."""

    def __init__(self, cfg: CVAEConfig):
        super().__init__()
        self.cfg = cfg
        f1, f2, h = cfg.filters1, cfg.filters2, cfg.n_leads
        bn2 = dict(eps=cfg.bn_eps, momentum=cfg.bn_momentum)
        self.flat_dim = f2 * cfg.pooled_width
        # Encoder (vae.py:176-193, one block per kernel, then the bottleneck vae.py:195-207).
        self.enc_conv1 = SameConv1xK(1, f1, cfg.kernel)
        self.enc_bn1 = nn.BatchNorm2d(f1, **bn2)
        self.enc_conv2 = nn.Conv2d(f1, f2, (h, 1))  # "valid": spans every lead
        self.enc_bn2 = nn.BatchNorm2d(f2, **bn2)
        self.enc_bn = nn.BatchNorm1d(self.flat_dim + cfg.condition_dim, **bn2)
        self.mu = nn.Linear(self.flat_dim + cfg.condition_dim, cfg.latent_dim)
        self.log_variance = nn.Linear(self.flat_dim + cfg.condition_dim, cfg.latent_dim)
        # Decoder (vae.py:232-280): the transposed convolutions mirror the encoder's, the last has one filter.
        self.dec_bn = nn.BatchNorm1d(cfg.latent_dim + cfg.condition_dim, **bn2)
        self.dec_dense = nn.Linear(cfg.latent_dim + cfg.condition_dim, self.flat_dim)
        self.dec_deconv1 = nn.ConvTranspose2d(f2, f2, (h, 1))
        self.dec_bn1 = nn.BatchNorm2d(f2, **bn2)
        self.dec_deconv2 = SameConvTranspose1xK(f2, 1, cfg.kernel)
        self.dec_bn2 = nn.BatchNorm2d(1, **bn2)
        # Per-lead statistics of the training split for amplitude "standard" (identity until set_data_stats).
        self.register_buffer("data_mean", torch.zeros(cfg.n_leads))
        self.register_buffer("data_std", torch.ones(cfg.n_leads))
        glorot_init(self)

    def set_data_stats(self, mean, std) -> None:
        """Store the per-lead mean and standard deviation of the [0, 1] training ECGs (amplitude "standard")."""
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != (self.cfg.n_leads,) or std.shape != (self.cfg.n_leads,) or not bool((std > 0).all()):
            raise ValueError(f"data statistics must be {self.cfg.n_leads} means and positive standard deviations")
        self.data_mean.copy_(mean)
        self.data_std.copy_(std)

    def to_model(self, x01: torch.Tensor) -> torch.Tensor:
        """[0, 1] ECGs (B, leads, samples) -> the amplitude the network models (``cfg.amplitude``)."""
        if self.cfg.amplitude == "unit":
            return x01
        return (x01 - self.data_mean[:, None].to(x01.dtype)) / self.data_std[:, None].to(x01.dtype)

    def from_model(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_model` (not clipped)."""
        if self.cfg.amplitude == "unit":
            return x
        return x * self.data_std[:, None].to(x.dtype) + self.data_mean[:, None].to(x.dtype)

    def _check_c(self, c: torch.Tensor, batch: int) -> torch.Tensor:
        if c.ndim != 2 or c.shape != (batch, self.cfg.condition_dim):
            raise ValueError(f"condition must have shape ({batch}, {self.cfg.condition_dim}), got {tuple(c.shape)}")
        return c

    def encode(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log sigma^2), each (B, latent_dim), of x (B, leads, samples) under condition c."""
        cfg = self.cfg
        if x.ndim != 3 or x.shape[1:] != (cfg.n_leads, cfg.length):
            raise ValueError(f"expected x of shape (B, {cfg.n_leads}, {cfg.length}), got {tuple(x.shape)}")
        c = self._check_c(c, x.shape[0])
        h = x.unsqueeze(1)  # one image channel, as their (leads, samples, 1)
        h = self.enc_bn1(F.elu(self.enc_conv1(h)))
        h = self.enc_bn2(F.elu(self.enc_conv2(h)))
        h = F.avg_pool2d(h, (1, cfg.pool))
        h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)  # Keras Flatten order (height, width, channel)
        h = self.enc_bn(torch.cat([h, c.to(h.dtype)], dim=1))
        return self.mu(h), self.log_variance(h)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None):
        """z = mu + exp(log sigma^2 / 2) eps (``vae.py``:209-213); eps from ``generator`` or the global RNG."""
        eps = torch.randn(mu.shape, device=mu.device, dtype=mu.dtype, generator=generator)
        return mu + torch.exp(logvar / 2) * eps

    def decode(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """(B, leads, samples) reconstruction of latent z (B, latent_dim) under condition c."""
        cfg = self.cfg
        c = self._check_c(c, z.shape[0])
        h = self.dec_dense(self.dec_bn(torch.cat([z, c.to(z.dtype)], dim=1)))
        h = h.view(-1, 1, cfg.pooled_width, cfg.filters2).permute(0, 3, 1, 2)  # back from (height, width, channel)
        h = torch.repeat_interleave(h, cfg.pool, dim=-1)  # UpSampling2D((1, 2)): nearest, each sample repeated
        h = self.dec_bn1(F.elu(self.dec_deconv1(h)))
        h = self.dec_bn2(F.elu(self.dec_deconv2(h)))
        return h.squeeze(1)

    def forward(self, x: torch.Tensor, c: torch.Tensor, generator: torch.Generator | None = None):
        """(reconstruction, mu, log sigma^2) of x under c, both in the model's amplitude (:meth:`to_model`)."""
        mu, logvar = self.encode(x, c)
        return self.decode(self.reparameterize(mu, logvar, generator), c), mu, logvar

    @torch.no_grad()
    def sample(self, c: torch.Tensor, generator: torch.Generator | None = None, temperature: float = 1.0):
        """[0, 1] ECGs (B, leads, samples) for conditions c (B, condition_dim), z ~ N(0, temperature^2 I)."""
        z = torch.randn((c.shape[0], self.cfg.latent_dim), device=c.device, generator=generator) * temperature
        return self.from_model(self.decode(z, c))


def bn_statistics(module: nn.Module) -> int:
    """Number of batch-norm running means and variances (Keras' non-trainable parameters)."""
    return sum(m.running_mean.numel() + m.running_var.numel() for m in module.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None)


def parameter_counts(model: CVAE) -> dict[str, int]:
    """Trainable parameters and the total with the batch-norm statistics (Keras' "Total params")."""
    trainable = count_parameters(model)
    return {"trainable": trainable, "with_bn_statistics": trainable + bn_statistics(model)}


def parse_args(argv=None) -> argparse.Namespace:
    """Flags of the parameter-count printout."""
    p = argparse.ArgumentParser(prog="python -m cvae_ecg.model", description="Parameter counts of the CVAE.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default="paper", choices=sorted(CONFIGS), help="named configuration")
    p.add_argument("--condition_dim", type=int, default=None,
                   help="condition size (default: the preset's; ecg with 9 classes: 13)")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    """Print the parameter counts of a preset."""
    overrides = {} if args.condition_dim is None else {"condition_dim": args.condition_dim}
    model = CVAE(get_config(args.config, **overrides))
    counts = parameter_counts(model)
    print(f"parameters: {counts['trainable']}")
    print(f"with batch-norm statistics: {counts['with_bn_statistics']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
