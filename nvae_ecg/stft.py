"""Spectrogram representation of the 2-D variant (2D-cNVAE-ECG, paper Sec. III-A): 8 leads <-> (16, F, T) STFT.

Each of the 8 independent leads (I, III, V1..V6) of a [0, 1]-scaled ECG goes
through a centred short-time Fourier transform with a periodic Hann window
(``torch.stft``, reflect padding at the ends); real and imaginary parts become two
channels, interleaved per lead (channel ``2l`` = Re of lead ``l``, ``2l + 1`` = Im),
so a (B, 8, L) batch becomes (B, 16, F, T) with ``F = n_fft // 2 + 1`` and
``T = 1 + L // hop_length`` (even ``n_fft``). The defaults for 10 s at 500 Hz, ``n_fft = win_length
= 126`` (252 ms, 3.97 Hz bins) and ``hop_length = 40`` (80 ms), give F = 64 and
T = 126: both fit NVAE's down-sampling by powers of two after padding T to 128
once (the model pads the grid to multiples of its total down-sampling factor and
crops its output back, see ``nvae_ecg.model``). Normalisation is per channel and
frequency: mean and standard deviation over all frames of the training split,
fitted once (:func:`fit_normalization`) and kept as buffers of the transform, so
they travel in the model's ``state_dict`` and hence in every checkpoint. The
imaginary parts of the DC and (even ``n_fft``) Nyquist bins are identically zero
for real signals; they are excluded from the likelihood through :attr:`mask` and
ignored by the inverse. The inverse (``torch.istft`` with the same window and the
original length) is exact up to floating-point rounding, and :func:`to_twelve`
adds the four dependent leads with :func:`nvae_ecg.leads.eight_to_twelve`.

Example::

    python -c "import torch; from nvae_ecg.stft import SpectrogramTransform; s = SpectrogramTransform(5000); x = torch.rand(2, 8, 5000); z = s(x); print(z.shape, float((s.inverse(z) - x).abs().max()))"
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch
import torch.nn as nn
from tqdm import tqdm

from nvae_ecg.leads import eight_to_twelve

NUM_LEADS = 8
#: Channels of the spectrogram tensor: real and imaginary part of each independent lead.
NUM_CHANNELS = 2 * NUM_LEADS
#: Defaults for 10 s at 500 Hz (see the module docstring): F = 64 frequency bins, T = 126 frames.
DEFAULT_N_FFT = 126
DEFAULT_HOP_LENGTH = 40
DEFAULT_WIN_LENGTH = 126


def stft_shape(length: int, n_fft: int, hop_length: int) -> tuple[int, int]:
    """(F, T) of a centred one-sided STFT of ``length`` samples (padded by n_fft // 2 on both sides)."""
    return n_fft // 2 + 1, 1 + (length + 2 * (n_fft // 2) - n_fft) // hop_length


def zero_imaginary_bins(n_fft: int) -> tuple[int, ...]:
    """Frequency bins whose imaginary part is identically zero for real input: DC, and Nyquist when n_fft is even."""
    return (0, n_fft // 2) if n_fft % 2 == 0 else (0,)


def check_nola(n_fft: int, hop_length: int, win_length: int, length: int) -> None:
    """Raise ValueError unless the Hann window satisfies the non-zero overlap-add condition (invertibility)."""
    window = torch.hann_window(win_length, dtype=torch.float64)
    left = (n_fft - win_length) // 2                         # torch.stft centres a shorter window inside n_fft
    w2 = torch.zeros(n_fft, dtype=torch.float64)
    w2[left:left + win_length] = window ** 2
    frames = stft_shape(length, n_fft, hop_length)[1]
    total = torch.zeros(n_fft + hop_length * (frames - 1), dtype=torch.float64)
    for t in range(frames):
        total[t * hop_length:t * hop_length + n_fft] += w2
    # The centred STFT pads n_fft // 2 on each side; only the original samples must be covered.
    inner = total[n_fft // 2:n_fft // 2 + length]
    if float(inner.min()) < 1e-11:
        raise ValueError(
            f"STFT with n_fft={n_fft}, hop_length={hop_length}, win_length={win_length} is not invertible (the "
            "Hann windows leave samples uncovered, NOLA fails); use a hop_length of at most win_length // 2"
        )


class SpectrogramTransform(nn.Module):
    """Normalised STFT of the 8 independent leads and its exact inverse (see the module docstring).

    Buffers ``mean`` and ``std`` (16, F) hold the per-channel, per-frequency normalisation (identity until
    :func:`fit_normalization` runs) and ``num_fitted`` the number of ECGs it was fitted on; they are part of the
    ``state_dict``. ``mask`` (16, F) is 1 for the modelled entries and 0 for the always-zero imaginary parts.
    """

    def __init__(self, length: int, n_fft: int = DEFAULT_N_FFT, hop_length: int = DEFAULT_HOP_LENGTH,
                 win_length: int = DEFAULT_WIN_LENGTH) -> None:
        super().__init__()
        if not 1 <= win_length <= n_fft:
            raise ValueError(f"STFT win_length must be in [1, n_fft={n_fft}], got {win_length}")
        if not 1 <= hop_length <= win_length:
            raise ValueError(f"STFT hop_length must be in [1, win_length={win_length}], got {hop_length}")
        if length <= n_fft // 2:
            raise ValueError(f"a centred STFT with n_fft={n_fft} needs signals longer than {n_fft // 2} samples, "
                             f"got length {length}")
        check_nola(n_fft, hop_length, win_length, length)
        self.length, self.n_fft, self.hop_length, self.win_length = length, n_fft, hop_length, win_length
        self.freq_bins, self.frames = stft_shape(length, n_fft, hop_length)
        f = self.freq_bins
        mask = torch.ones(NUM_CHANNELS, f)
        mask[1::2, list(zero_imaginary_bins(n_fft))] = 0.0
        self.register_buffer("mask", mask, persistent=False)
        self.register_buffer("mean", torch.zeros(NUM_CHANNELS, f))
        self.register_buffer("std", torch.ones(NUM_CHANNELS, f))
        self.register_buffer("num_fitted", torch.zeros((), dtype=torch.int64))

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, F, T) of one transformed ECG."""
        return NUM_CHANNELS, self.freq_bins, self.frames

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """Un-normalised STFT (B, 16, F, T) of x (B, 8, L): real/imag interleaved per lead."""
        if x.dim() != 3 or x.shape[1] != NUM_LEADS or x.shape[2] != self.length:
            raise ValueError(f"the STFT expects signals of shape (B, {NUM_LEADS}, {self.length}) (leads I, III, "
                             f"V1..V6), got {tuple(x.shape)}")
        b = x.shape[0]
        # The window is built in the signal's dtype each call (a float32 window would limit float64 precision).
        window = torch.hann_window(self.win_length, dtype=x.dtype, device=x.device)
        spec = torch.stft(x.reshape(b * NUM_LEADS, self.length), self.n_fft, self.hop_length, self.win_length,
                          window=window, center=True, pad_mode="reflect", normalized=False, onesided=True,
                          return_complex=True)                                   # B*8, F, T complex
        spec = torch.view_as_real(spec).permute(0, 3, 1, 2)                      # B*8, 2, F, T
        return spec.reshape(b, NUM_CHANNELS, self.freq_bins, self.frames)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised spectrogram (B, 16, F, T) of signals x (B, 8, L)."""
        spec = self.spectrogram(x)
        return (spec - self.mean.to(spec.dtype).unsqueeze(-1)) / self.std.to(spec.dtype).unsqueeze(-1)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Signals (B, 8, L) of a normalised spectrogram z (B, 16, F, T): un-normalise, then iSTFT (exact)."""
        if z.dim() != 4 or tuple(z.shape[1:]) != self.shape:
            raise ValueError(f"the inverse STFT expects (B, {NUM_CHANNELS}, {self.freq_bins}, {self.frames}), "
                             f"got {tuple(z.shape)}")
        z = z.to(torch.promote_types(z.dtype, torch.float32))
        spec = z * self.std.to(z.dtype).unsqueeze(-1) + self.mean.to(z.dtype).unsqueeze(-1)
        b = spec.shape[0]
        spec = spec.reshape(b * NUM_LEADS, 2, self.freq_bins, self.frames).permute(0, 2, 3, 1).contiguous()
        window = torch.hann_window(self.win_length, dtype=z.dtype, device=z.device)
        x = torch.istft(torch.view_as_complex(spec), self.n_fft, self.hop_length, self.win_length, window=window,
                        center=True, normalized=False, onesided=True, length=self.length)
        return x.reshape(b, NUM_LEADS, self.length)

    def extra_repr(self) -> str:
        """STFT geometry shown in the module's repr."""
        return (f"length={self.length}, n_fft={self.n_fft}, hop_length={self.hop_length}, "
                f"win_length={self.win_length}, shape={self.shape}")


@torch.no_grad()
def fit_normalization(transform: SpectrogramTransform, batches: Iterable, total: Optional[int] = None) -> int:
    """Set ``transform``'s mean/std (16, F) from batches of signals (B, 8, L); returns the number of ECGs used.

    Accumulates in float64 over every frame of every ECG (a batch may also be a (signals, labels) pair, as the
    datasets yield). The always-zero imaginary bins get mean 0 and std 1; any other std is floored at 1e-6 of the
    largest so that a constant bin cannot divide by zero.
    """
    device = transform.mean.device
    s1 = torch.zeros(transform.mean.shape, dtype=torch.float64, device=device)
    s2 = torch.zeros_like(s1)
    n_ecg, n_frames = 0, 0
    for batch in tqdm(batches, total=total, desc="STFT normalisation", unit="batch", leave=False):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        spec = transform.spectrogram(x.to(device=device, dtype=torch.float64))
        s1 += spec.sum(dim=(0, 3))
        s2 += (spec * spec).sum(dim=(0, 3))
        n_ecg += spec.shape[0]
        n_frames += spec.shape[0] * spec.shape[3]
    if n_ecg == 0:
        raise ValueError("fit_normalization got no signals: the training split is empty")
    mean = s1 / n_frames
    std = (s2 / n_frames - mean * mean).clamp(min=0.0).sqrt()
    mask = transform.mask.to(torch.bool)
    mean = torch.where(mask, mean, torch.zeros_like(mean))
    floor = 1e-6 * float(std[mask].max()) if bool((std[mask] > 0).any()) else 1.0
    std = torch.where(mask, std.clamp(min=floor), torch.ones_like(std))
    transform.mean.copy_(mean.to(transform.mean.dtype))
    transform.std.copy_(std.to(transform.std.dtype))
    transform.num_fitted.fill_(n_ecg)
    return n_ecg


class SpectrogramLikelihood:
    """The 2-D decoder distribution seen from the signal side: log_prob takes and sample/mean return (B, 8, L).

    Wraps a distribution over the normalised spectrogram (``nvae_ecg.distributions.DiagonalGaussian``) and the
    transform that produced it, so that the trainer, the evaluation and the samplers handle both
    representations alike. ``log_prob(x)`` is the density of the normalised spectrogram of x (per spectrogram
    position, (B, F * T)); it is a density on a different space than the 1-D model's, so NELBOs of the two
    representations are not comparable. Samples are mapped back by the exact inverse STFT and clipped to [0, 1],
    the range of the training signals (``nvae_ecg.data.bounds``) that every generator's sampler returns.
    """

    def __init__(self, dist, transform: SpectrogramTransform) -> None:
        self.dist = dist
        self.transform = transform

    def log_prob(self, x: torch.Tensor, validate: bool = True) -> torch.Tensor:
        """Log-density (B, F * T) of the normalised spectrogram of signals x (B, 8, L) in [0, 1].

        ``validate`` checks the [0, 1] range as DiscMixLogistic8 does (a host synchronisation; the training step
        passes False because its data are clipped when loaded).
        """
        if validate and bool(((x < 0) | (x > 1)).any()):
            raise ValueError("log_prob expects ECGs scaled to [0, 1]; found values outside that range")
        return self.dist.log_prob(self.transform(x), validate=validate)

    def sample(self, t: float = 1.0, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Signals (B, 8, L) in [0, 1] from a spectrogram sample with temperature t."""
        return self.transform.inverse(self.dist.sample(t, generator)).clamp(0.0, 1.0)

    def mean(self) -> torch.Tensor:
        """Signals (B, 8, L) in [0, 1] of the mean spectrogram."""
        return self.transform.inverse(self.dist.mean()).clamp(0.0, 1.0)


def to_twelve(x8):
    """The 12 standard leads of 8-lead signals (..., 8, L) (numpy or torch), via the Einthoven/Goldberger algebra."""
    return eight_to_twelve(x8, axis=-2)
