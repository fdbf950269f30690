"""The S4 layer of SSSD-ECG, written from the S4 paper: HiPPO-LegS in normal-plus-low-rank form, bilinear
discretisation, the convolution kernel from its generating function (Cauchy sums plus a rank-1 Woodbury
correction), bidirectional FFT convolution, GELU, a position-wise Linear, residual and LayerNorm.

Gu, Goel & Re 2022 ("Efficiently modeling long sequences with structured state spaces", ICLR) describe the
state-space model x' = A x + B u, y = C x + D u with the HiPPO-LegS matrix A; A is unitarily equivalent to
diag(w) - p p^* (w: N/2 complex modes kept of N conjugate pairs). With the bilinear transform the length-L
kernel K_k = C A_bar^k B_bar has the generating function, at the L-th roots of unity omega,
K^(omega) = C~ (I - A_bar omega)^(-1) B_bar with C~ = C (I - A_bar^L); S4 trains C~ directly and evaluates
K^ by Cauchy sums over the modes, inverting with an inverse real FFT. A, B, p and dt stay frozen buffers in the
SSSD-ECG configuration (their ``S4Model.py:1182-1201``, state-spaces/s4 ``HippoSSKernel`` with ``trainable=None``);
C, D, the output Linear and the LayerNorm train. Everything is re-derived here; no code is copied.

Example::

    python -c "import torch; from sssd_ecg.s4 import S4Layer; m = S4Layer(16, l_max=100, d_state=8); print(m(torch.randn(2, 16, 100)).shape)"
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

#: Features per block of the resolvent (see S4Kernel.resolvent).
_RESOLVENT_BLOCK = 8


@lru_cache(maxsize=8)
def hippo_legs_nplr(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """HiPPO-LegS (A, B) of state size ``n`` and its NPLR form (A, B, w, p, b, V): A = V (diag(w) - p p^*) V^*
    over both members of every conjugate pair (V's columns: the kept modes; the others are their conjugates).

    A_nk = -sqrt(2n+1) sqrt(2k+1) below the diagonal, -(n+1) on it, 0 above; B_n = sqrt(2n+1); the rank-1
    term P_n = sqrt(n + 1/2) makes A + P P^T = -I/2 + S with S skew-symmetric (S4 paper, Sec. 3.3 and App. C.1;
    state-spaces/s4 ``transition('legs')``, ``rank_correction``, ``nplr``). The eigenvectors of S come from
    the Hermitian matrix -iS (``eigh``: orthonormal, unlike a general ``eig``); of each conjugate pair of
    eigenvalues -1/2 +- i mu only the one with mu > 0 is kept (w, p = V^* P, b = V^* B for those n/2 modes).
    Returned in float64/complex128 (cached: treat as read-only).
    """
    if n < 2 or n % 2:
        raise ValueError(f"the S4 state size must be even and >= 2 (conjugate pairs), got {n}")
    q = np.arange(n, dtype=np.float64)
    r = np.sqrt(2 * q + 1)
    a = -(np.tril(np.outer(r, r), -1) + np.diag(q + 1))
    b = r.copy()
    p = np.sqrt(q + 0.5)
    skew = a + np.outer(p, p) + 0.5 * np.eye(n)
    mu, v = np.linalg.eigh(-1j * skew)  # skew = V diag(i mu) V^*
    keep = np.flatnonzero(mu > 0)
    if len(keep) != n // 2:
        raise ValueError(f"HiPPO-LegS of size {n}: expected {n // 2} eigenvalues with positive imaginary part, "
                         f"found {len(keep)}")
    keep = keep[np.argsort(-mu[keep])]
    vh = v[:, keep]
    w = -0.5 + 1j * mu[keep]
    return a, b, w, vh.conj().T @ p, vh.conj().T @ b, vh


def full_modes(z: torch.Tensor) -> torch.Tensor:
    """The N conjugate-pair modes from the N/2 kept ones (last axis): [z, conj(z)]."""
    return torch.cat([z, z.conj()], dim=-1)


def dense_nplr(w: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The full (..., N, N) complex state matrix diag(w) - p p^* over both members of every conjugate pair."""
    wf, pf = full_modes(w), full_modes(p)
    return torch.diag_embed(wf) - pf.unsqueeze(-1) * pf.conj().unsqueeze(-2)


def bilinear(a: torch.Tensor, b: torch.Tensor, dt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear (Tustin) discretisation: A_bar = (I - dt/2 A)^-1 (I + dt/2 A), B_bar = dt (I - dt/2 A)^-1 B."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    half = (dt / 2).to(a.dtype)[..., None, None]
    back = eye - half * a
    a_bar = torch.linalg.solve(back, eye + half * a)
    b_bar = dt.to(a.dtype)[..., None] * torch.linalg.solve(back, b.unsqueeze(-1)).squeeze(-1)
    return a_bar, b_bar


def length_corrected(c: torch.Tensor, dt: torch.Tensor, length: int) -> torch.Tensor:
    """C~ = C (I - A_bar^L) for kept-mode C (..., h, N/2) complex128 and time steps dt (h,): S4's initial C~.

    Computed in the real LegS basis, where A is the same lower-triangular matrix for every feature: the
    unitary V of :func:`hippo_legs_nplr` maps it to the modal basis (A_modal = V^* A V, so
    C A_bar_modal^L = (C V^*) A_bar^L V), and real float64 squarings cost a quarter of complex ones (the paper
    configuration builds 72 layers of 512 features).
    """
    n = 2 * c.shape[-1]
    a, _, _, _, _, vh = hippo_legs_nplr(n)
    vh = torch.as_tensor(vh)
    v_full = torch.cat([vh, vh.conj()], dim=1)  # (N, N) unitary: columns are the modes [kept, conjugates]
    a_t = torch.as_tensor(a)
    a_bar, _ = bilinear(a_t.expand(len(dt), n, n), torch.zeros(len(dt), n, dtype=torch.float64), dt)
    power = torch.linalg.matrix_power(a_bar, length)  # (h, N, N) real
    cv = full_modes(c) @ v_full.conj().T  # (..., h, N): C in the LegS basis
    cvp = torch.complex((cv.real.unsqueeze(-2) @ power).squeeze(-2), (cv.imag.unsqueeze(-2) @ power).squeeze(-2))
    return (full_modes(c) - cvp @ v_full)[..., : n // 2]


class S4Kernel(nn.Module):
    """The length-``l_max`` S4 convolution kernels of ``channels`` output heads over ``h`` features.

    Buffers (frozen): ``w``, ``p``, ``b`` (h, N/2) and ``log_dt`` (h,), with ``log dt`` uniform in
    [log dt_min, log dt_max]; parameter ``C`` (channels, h, N/2): C~ = C (I - A_bar^L) of a C drawn from the
    standard complex normal, as S4 initialises it. Complex tensors are stored as real (..., 2) views so that
    checkpoints, DDP buffer broadcasts and Adam see real numbers. ``length_correction=False`` skips the
    (I - A_bar^L) product (0.6 s per layer of 512 features on one CPU thread) for a module whose weights are
    loaded next.
    """

    def __init__(self, h: int, d_state: int = 64, l_max: int = 1000, channels: int = 1, dt_min: float = 1e-3,
                 dt_max: float = 0.1, length_correction: bool = True):
        super().__init__()
        if l_max < 2:
            raise ValueError(f"l_max must be >= 2, got {l_max}")
        self.h, self.n, self.l_max, self.channels = int(h), int(d_state), int(l_max), int(channels)
        _, _, w, p, b, _ = hippo_legs_nplr(self.n)
        ones = torch.ones(self.h, 1, dtype=torch.complex128)
        w_, p_, b_ = (torch.as_tensor(z) * ones for z in (w, p, b))  # (h, N/2): identical for every feature
        log_dt = torch.rand(self.h, dtype=torch.float64) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        c = torch.randn(self.channels, self.h, self.n // 2, dtype=torch.complex128)
        c_tilde = length_corrected(c, log_dt.exp(), self.l_max) if length_correction else c
        dtype = torch.get_default_dtype()
        self.register_buffer("w", torch.view_as_real(w_).to(dtype))
        self.register_buffer("p", torch.view_as_real(p_).to(dtype))
        self.register_buffer("b", torch.view_as_real(b_).to(dtype))
        self.register_buffer("log_dt", log_dt.to(dtype))
        self.C = nn.Parameter(torch.view_as_real(c_tilde).to(dtype).contiguous())

    def extra_repr(self) -> str:
        return f"h={self.h}, d_state={self.n}, l_max={self.l_max}, channels={self.channels}"

    def resolvent(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The C-independent part of the kernel at the L//2+1 FFT nodes omega_k = exp(-2 pi i k / L).

        With s = 1 - omega, u = 1 + omega and A = diag(w) - p p^*, (I - A_bar omega)^-1 B_bar = 2 (2s/dt I - u A)^-1 B.
        The diagonal part d_n = 2s/dt - u w_n is inverted elementwise and the rank-1 part by Woodbury:
        (D + u p p^*)^-1 = D^-1 - u D^-1 p p^* D^-1 / (1 + u p^* D^-1 p), so that
        K^(omega) = 2 [C~ D^-1 b - u beta C~ D^-1 p] with beta = p^* D^-1 b / (1 + u p^* D^-1 p). Multiplying
        through by (1 + omega) keeps every node finite, the Nyquist node omega = -1 included (S4's Cauchy form
        divides by 1 + omega there). Sums run over both members of every conjugate pair: the authors' CPU
        fallback (``S4Model.py:98-105``) sums only the kept half, which gives a wrong kernel.
        Returns (D^-1 (h, N, K), u (K,), beta (h, K)), complex.
        """
        real = self.log_dt.dtype
        cdtype = torch.complex128 if real == torch.float64 else torch.complex64
        k = torch.arange(self.l_max // 2 + 1, device=self.log_dt.device, dtype=torch.float64)
        omega = torch.polar(torch.ones_like(k), -2 * math.pi * k / self.l_max)  # angles in float64
        s, u = (1 - omega).to(cdtype), (1 + omega).to(cdtype)
        w, p, b = (full_modes(torch.view_as_complex(z)) for z in (self.w, self.p, self.b))  # (h, N)
        two_dt = (2 / self.log_dt.exp()).to(cdtype)
        inv_d = torch.empty(self.h, self.n, len(k), dtype=cdtype, device=k.device)
        # h * N * K reciprocals (16M per layer and step in the paper configuration) dominate the kernel's cost;
        # blocks of a few features stay in cache, 3x faster on CPU than one pass over the whole tensor.
        for i in range(0, self.h, _RESOLVENT_BLOCK):
            j = slice(i, i + _RESOLVENT_BLOCK)
            torch.reciprocal(two_dt[j, None, None] * s - u * w[j, :, None], out=inv_d[j])
        vec = torch.stack([p.conj() * b, p.abs().square().to(cdtype)], dim=1)  # (h, 2, N)
        pb, pp = torch.bmm(vec, inv_d).unbind(1)  # p^* D^-1 b, p^* D^-1 p: (h, K)
        return inv_d, u, pb / (1 + u * pp)

    def _kernel(self, c: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            inv_d, u, beta = self.resolvent()
            b, p = (full_modes(torch.view_as_complex(z)) for z in (self.b, self.p))
        cf = full_modes(torch.view_as_complex(c))  # (channels, h, N)
        cb, cp = torch.bmm(torch.cat([cf * b, cf * p]).transpose(0, 1), inv_d).transpose(0, 1).chunk(2)
        kf = 2 * (cb - u * beta * cp)  # (channels, h, K)
        return torch.fft.irfft(kf, n=self.l_max)

    def forward(self) -> torch.Tensor:
        """Kernels (channels, h, l_max), real, in the dtype of the buffers."""
        c = self.C
        if torch.is_grad_enabled() and c.requires_grad:
            # The kernel is linear in C~, so its backward needs the (h, N, L/2+1) complex transfer tensor: 131 MB
            # per layer in the paper configuration, 9.4 GB for its 72 layers. Recomputing it in the backward
            # costs a few elementwise passes instead.
            return checkpoint(self._kernel, c, use_reentrant=False)
        return self._kernel(c)


class S4Layer(nn.Module):
    """SSSD-ECG's S4 block on (B, H, L): bidirectional S4 convolution + D u, GELU, Linear H -> H, + x, LayerNorm.

    The SSSD-ECG wrapper (``S4Model.py:1182-1201``: ``S4Layer(features, lmax, N, dropout, bidirectional,
    layer_norm)``) around state-spaces/s4's ``S4`` with ``channels=1``: bidirectional doubles the kernel heads,
    and the second head, flipped, convolves the future (``k = pad(k0, (0, L)) + pad(flip(k1), (L, 0))``, one
    non-causal FFT convolution of length 2L). Dropout (0 in the paper) acts after the GELU.
    """

    def __init__(self, features: int, l_max: int, d_state: int = 64, dropout: float = 0.0,
                 bidirectional: bool = True, layer_norm: bool = True, dt_min: float = 1e-3, dt_max: float = 0.1,
                 length_correction: bool = True):
        super().__init__()
        self.features, self.bidirectional = int(features), bool(bidirectional)
        self.kernel = S4Kernel(features, d_state, l_max, channels=2 if bidirectional else 1, dt_min=dt_min,
                               dt_max=dt_max, length_correction=length_correction)
        self.D = nn.Parameter(torch.randn(features))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.output_linear = nn.Linear(features, features)
        self.norm = nn.LayerNorm(features) if layer_norm else nn.Identity()
        self._cached: torch.Tensor | None = None

    def conv_kernel(self, length: int) -> torch.Tensor:
        """The (H, 2L) circular-convolution kernel for inputs of ``length`` samples (causal part, then anti-causal)."""
        if length > self.kernel.l_max:
            raise ValueError(f"input of {length} samples is longer than the S4 kernel (l_max {self.kernel.l_max})")
        k = self._cached if self._cached is not None else self.kernel()
        k = k[..., :length]
        if self.bidirectional:
            return F.pad(k[0], (0, length)) + F.pad(k[1].flip(-1), (length, 0))
        return F.pad(k[0], (0, length))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        # FFTs have no bf16 kernels and lose accuracy in half precision: the convolution runs in float32.
        with torch.autocast(x.device.type, enabled=False):
            u = x.float()
            k = self.conv_kernel(length).float()
            y = torch.fft.irfft(torch.fft.rfft(u, n=2 * length) * torch.fft.rfft(k, n=2 * length), n=2 * length)
            y = y[..., :length] + u * self.D.float()[:, None]
        y = self.dropout(F.gelu(y.to(x.dtype)))
        y = self.output_linear(y.transpose(1, 2)) + x.transpose(1, 2)
        return self.norm(y).transpose(1, 2)


@contextmanager
def cached_kernels(module: nn.Module):
    """Compute every S4 kernel inside ``module`` once and reuse it until the block ends (sampling: 200 steps).

    The kernels depend only on the weights, not on the input, so a batch of the reverse diffusion needs them
    once instead of once per denoising step. Only for inference: the cached kernels carry no gradient.
    """
    layers = [m for m in module.modules() if isinstance(m, S4Layer)]
    try:
        with torch.no_grad():
            for m in layers:
                m._cached = m.kernel()
        yield module
    finally:
        for m in layers:
            m._cached = None
