"""The CPU fast paths of cNVAE-ECG behind one switch: fused BatchNorm + ELU, ELU, GEMM conv, mixture, mallopt.

Each kernel here computes exactly what a plain PyTorch formulation in the model computes, in fewer passes or with
faster ATen kernels on CPU: ELU as max(x, 2^(log2(e) min(x, 0)) - 1) with its gradient taken from the output
(:func:`elu`, plain: ``F.elu``), training-mode BatchNorm + ELU/SiLU as one autograd function (:func:`bn_act_train`,
plain: ``nn.BatchNorm`` + activation), float32 1-D convolutions through ATen's im2col + GEMM kernel where oneDNN is
slow for their shape (:func:`use_gemm_conv` / :func:`gemm_conv1d`, plain: ``F.conv1d``), the 8-lead mixture
log-likelihood with a hand-derived backward (:func:`mixture_log_prob`, plain:
``DiscMixLogistic8._log_prob_autograd``) and glibc's heap kept without ``mmap`` (:func:`keep_freed_cpu_memory`).
:func:`enabled` is the one switch (default on; ``CNVAE_KERNELS=0`` in the environment, :func:`set_enabled` or the
:func:`disabled` context turn it off): when off, every caller runs the plain formulation. The tests
(tests/test_fused_bn_act.py, tests/test_mixture_fused.py, tests/test_cpu_fast_paths.py, tests/test_kernels.py)
check each kernel against it; the timings that motivated them are in BENCHMARKS.md ("CPU kernels"). This module
imports nothing of the model: the mixture's layout comes in as a :class:`MixtureSpec`.

Example::

    CNVAE_KERNELS=0 python -c "import nvae_ecg.kernels as k; print(k.enabled(), k.set_enabled(True), k.enabled())"
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.autograd.function import once_differentiable

#: Values of the CNVAE_KERNELS environment variable that turn the kernels off.
_OFF_VALUES = ("0", "false", "no", "off")
_enabled = os.environ.get("CNVAE_KERNELS", "1").strip().lower() not in _OFF_VALUES


def enabled() -> bool:
    """True when the fast paths run (the default; ``CNVAE_KERNELS=0`` at import turns them off)."""
    return _enabled


def set_enabled(flag: bool) -> bool:
    """Turn the fast paths on or off for the whole process; returns the previous setting."""
    global _enabled
    previous, _enabled = _enabled, bool(flag)
    return previous


@contextlib.contextmanager
def disabled():
    """Within the block every caller runs the plain PyTorch formulation; the previous setting is restored after."""
    previous = set_enabled(False)
    try:
        yield
    finally:
        set_enabled(previous)


# -- ELU ---------------------------------------------------------------------------------------------------------
#: log2(e): exp(x) = 2^(log2(e) x).
_LOG2_E = math.log2(math.e)


def _cpu_elu(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """ELU (alpha 1) as max(x, 2^(log2(e) min(x, 0)) - 1), written into ``out`` (a new tensor if None)."""
    # exp(x) - 1 >= x everywhere, so the maximum picks x for x > 0 (where the exponential branch is 0) and the
    # exponential branch otherwise. exp2 because ATen's float32 exp2 kernel is faster than its exp and expm1 here;
    # the scaled argument costs at most ~1 ulp of the result (|x| 2^x is largest, 1/e, at x = -1).
    out = torch.clamp(x, max=0, out=out)
    out.mul_(_LOG2_E).exp2_().sub_(1)
    return torch.maximum(x, out, out=out)


def _elu_grad_from_output(grad: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """grad * ELU'(x) = grad * (min(out, 0) + 1) from out = ELU(x) (exp(x) = out + 1 for x <= 0)."""
    # ATen's ELU derivative kernel in its from-the-output form (is_result=True): one vectorised pass.
    return torch.ops.aten.elu_backward(grad, 1.0, 1.0, 1.0, True, out)


class _CPUELUFunction(torch.autograd.Function):
    """ELU with alpha 1 as max(x, exp(min(x, 0)) - 1) (see _cpu_elu); the gradient comes from the output."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = _cpu_elu(x)
        # The output (not exp(min(x, 0))) is saved: the next convolution keeps it alive anyway.
        ctx.save_for_backward(out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return _elu_grad_from_output(grad, out)


def elu(x: torch.Tensor) -> torch.Tensor:
    """ELU (alpha 1) of a CPU tensor through exp2 (F.elu's values and gradients; no double backward)."""
    return _CPUELUFunction.apply(x)


# -- BatchNorm + activation --------------------------------------------------------------------------------------
#: Activations the fused BatchNorm-activation function implements.
FUSED_ACTS = ("elu", "silu")


def _channel_shape(x: torch.Tensor) -> tuple[int, ...]:
    """Shape (1, C, 1, ...) that broadcasts a per-channel vector against x (B, C, *spatial)."""
    return (1, x.shape[1]) + (1,) * (x.dim() - 2)


def _reduce_dims(x: torch.Tensor) -> tuple[int, ...]:
    """Every axis of x (B, C, *spatial) but the channel axis."""
    return (0,) + tuple(range(2, x.dim()))


class _BNActFunction(torch.autograd.Function):
    """Training-mode BatchNorm (batch statistics) followed by ELU or SiLU, in few passes over the activations.

    Inputs: x (B, C, *spatial), weight, bias, running_mean, running_var, the running-average factor (None: no
    running update), eps and the activation (one of FUSED_ACTS). The running buffers are updated in place as
    nn.BatchNorm does (unbiased variance). Saves x, per-channel mean and 1/std, and for ELU its output (which the
    following convolution keeps anyway), for SiLU its input: never more activation-sized memory than
    nn.BatchNorm + activation, which save x, the BatchNorm output and (through the convolution) the output.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, factor, eps, act):
        dims, shape = _reduce_dims(x), _channel_shape(x)
        n = x.numel() // x.shape[1]
        mean = x.mean(dims)
        # Two-pass variance (mean first, then the sum of squared deviations): exact to a few ulp however large
        # |mean| is relative to the std, unlike the one-pass E[x^2] - E[x]^2 (off by ~(mean/std)^2 ulp). The
        # centred tensor is needed for the normalisation anyway, and plain means beat torch.var_mean,
        # vector_norm and ATen's BatchNorm forward on CPU.
        xc = x - mean.view(shape)
        buf = torch.mul(xc, xc)
        var = buf.mean(dims)
        rstd = torch.rsqrt(var + eps)
        # (x - mean) * (gamma / std) + beta over the centred tensor (mul_/add_ beat a broadcast addcmul here).
        y = xc.mul_((weight * rstd).view(shape)).add_(bias.view(shape))
        if act == "elu":
            out = _cpu_elu(y, out=buf)
            ctx.save_for_backward(x, weight, mean, rstd, out)
        else:
            # SiLU (ATen's kernel, as F.silu) into the squares' buffer: no further allocation.
            out = torch.ops.aten.silu.out(y, out=buf)
            ctx.save_for_backward(x, weight, mean, rstd, y)
        if factor is not None:
            # nn.BatchNorm's running update: (1 - m) * running + m * batch statistic, unbiased variance.
            running_mean.mul_(1 - factor).add_(mean, alpha=factor)
            running_var.mul_(1 - factor).add_(var, alpha=factor * n / (n - 1))
        ctx.act = act
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight, mean, rstd, saved = ctx.saved_tensors
        if ctx.act == "elu":
            gy = _elu_grad_from_output(grad, saved)
        else:
            # ATen's SiLU derivative kernel (what F.silu's autograd runs) on the saved SiLU input: one pass.
            gy = torch.ops.aten.silu_backward(grad, saved)
        # The BatchNorm backward is ATen's kernel (what nn.BatchNorm's autograd runs), fed with this function's
        # batch mean and 1/std: two passes, faster than the same formula in tensor ops
        # (dx = gamma/std * (gy - mean(gy) - xhat * mean(gy * xhat)), d_gamma = sum(gy * xhat), d_beta = sum(gy)).
        grad_x, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            gy, x, weight, None, None, mean, rstd, True, 0.0, list(ctx.needs_input_grad[:3]))
        return grad_x, grad_weight, grad_bias, None, None, None, None, None


def bn_act_train(bn: nn.BatchNorm1d | nn.BatchNorm2d, x: torch.Tensor, act: str) -> torch.Tensor:
    """act(bn(x)) for a training-mode, affine nn.BatchNorm1d/2d with running statistics, fused (same numbers)."""
    if act not in FUSED_ACTS:
        raise ValueError(f"fused BatchNorm supports the activations {FUSED_ACTS}, got {act!r}")
    # nn.BatchNorm's bookkeeping: count the batch, then the running-average factor (1 / count if momentum is None).
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            factor = 1.0 / float(bn.num_batches_tracked)
    return _BNActFunction.apply(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, factor, bn.eps, act)


# -- convolution kernel by shape ---------------------------------------------------------------------------------
#: Where ATen's im2col + GEMM convolution beats oneDNN's for float32 1-D convolutions on CPU (forward + backward):
#: 1x1 kernels, few input taps (C_in * k) and small problems (batch * length), where oneDNN's fixed cost per call
#: dominates; oneDNN stays faster for wide k3 convolutions on big batches (figures: BENCHMARKS.md, "CPU kernels").
GEMM_CONV_MAX_TAPS = 36
GEMM_CONV_MAX_POSITIONS = 2560


def use_gemm_conv(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True where a 1-D conv of x (B, C, L) runs faster as ATen's im2col + GEMM than through oneDNN (CPU float32).

    False whenever the kernels are switched off (:func:`enabled`).
    """
    if not _enabled or x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 3:
        return False
    if torch.compiler.is_compiling():
        return False
    if torch.is_autocast_enabled("cpu"):  # autocast casts F.conv1d's inputs; it does not know the GEMM kernel
        return False
    taps = weight.shape[1] * weight.shape[2]
    return (weight.shape[2] == 1 or taps <= GEMM_CONV_MAX_TAPS
            or x.shape[0] * x.shape[2] <= GEMM_CONV_MAX_POSITIONS)


def gemm_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
                padding: int) -> torch.Tensor:
    """F.conv1d (no groups, no dilation) through ATen's im2col + GEMM kernel on the (B, C, 1, L) view."""
    # torch picks oneDNN for every float32 CPU conv; thnn_conv2d is the kernel float64 always uses, and its
    # autograd formula covers the backward. Its weight gradient is wrong for a non-contiguous input (such as
    # FactorizedReduce's shifted slice x[:, :, 1:]; torch 2.14), hence the contiguous copy.
    out = torch.ops.aten.thnn_conv2d(x.contiguous().unsqueeze(2), weight.unsqueeze(2), [1, weight.shape[2]], bias,
                                     [1, stride], [0, padding])
    return out.squeeze(2)


# -- 8-lead mixture log-likelihood -------------------------------------------------------------------------------
# DiscMixLogistic8.log_prob as one autograd Function with a hand-derived backward (paper eq. 3, the factorisation of
# DiscMixLogistic8._log_prob_autograd). Per element (lead i, component k, position l), with c = x_i - (mu + C x)_i,
# p = (c + h) / s, m = (h - c) / s and w = p + m = 2h / s, the interior bin mass is
#     sigmoid(p) - sigmoid(-m) = sigmoid(p) * sigmoid(m) * (1 - exp(-w)),
# and ONE logarithm is taken, of the product: p and m are never both negative (p + m = w > 0), so once the sigmoid
# arguments are clamped at -80 (the part below the clamp is added back exactly in log space) the product is a normal
# float32. An edge bin drops a factor by shifting its argument (sigmoid's, or w) to where the factor rounds to
# exactly 1, so no mask multiplies a logarithm. float32 uses only this torch's vectorised kernels (sigmoid, exp,
# log, arithmetic; its float32 softplus/log1p/expm1 are scalar loops, and tanh is slower than sigmoid), with series
# for the w-terms at small w; float64 uses expm1 there. The backward recomputes the intermediates from the raw
# parameters (alive anyway): besides them it saves only xs (B, 8, L) and the component totals (B, M, L).

@dataclass(frozen=True)
class MixtureSpec:
    """What the fused mixture needs of DiscMixLogistic8's layout (nvae_ecg.distributions builds the one it uses).

    The decoder output (B, (1 + 2 * num_leads + len(coupling_pairs)) * M, L) holds M logits, then per lead and
    component the means, raw log-scales and raw coupling coefficients (coefficient k couples lead
    ``coupling_pairs[k][0]`` to lead ``coupling_pairs[k][1]``). Log-scales are clamped at ``log_scale_min`` from
    below and bin widths w = 2h / s at ``w_min``, as in the autograd reference.
    """

    num_leads: int
    coupling_pairs: tuple[tuple[int, int], ...]
    log_scale_min: float
    w_min: float


#: Sigmoid arguments are clamped at this value from below: log sigmoid(z) = z + 80 + log sigmoid(-80) for z < -80 up
#: to 1.8e-35, so adding min(z + 80, 0) back in log space is exact in float32 and float64.
_SIGMOID_FLOOR = -80.0
#: Exponents below this are clamped in the mixture's logsumexp and responsibilities: such terms are below float64
#: resolution next to the largest (exp(-80) = 1.8e-35), and an exp that underflows takes this torch's slow path.
_EXP_FLOOR = -80.0
#: Sigmoid arguments are clamped at this value from above and 1 - exp(-w) is taken at w <= this value: sigmoid(40)
#: and 1 - exp(-40) round to exactly 1 in float32 and float64, so nothing changes, but exp(-40) is still a normal
#: float32 (this torch's vectorised float32 exp and sigmoid fall to a slower path once a lane underflows).
#: An edge bin drops a factor by setting its argument to this value.
_ONE_AT = 40.0
#: float32 switch from series to closed forms of the w-terms: above it exp(-w) <= 0.37, so 1 - exp(-w) does not
#: cancel; below it the series reach float32 resolution with 4 terms.
_SERIES_MAX = 1.0
#: log((1 - exp(-v)) / v) + v/2 = log(sinh(v/2) / (v/2)): coefficients of v^2, v^4, v^6, v^8 (error < 3e-9 at v = 1).
_LOG_WIDTH_SERIES = (1.0 / 24.0, -1.0 / 2880.0, 1.0 / 181440.0, -1.0 / 9676800.0)
#: v / expm1(v) - 1 + v/2 = sum_j B_2j v^2j / (2j)!: coefficients of v^2 .. v^8 (error < 2.1e-8 at v = 1, for a
#: gradient term of size ~1).
_PSI_SERIES = (1.0 / 12.0, -1.0 / 720.0, 1.0 / 30240.0, -1.0 / 1209600.0)
_LOG_WIDTH_AT_MAX = math.log(-math.expm1(-_SERIES_MAX))     # log(1 - exp(-1))
_PSI_AT_MAX = _SERIES_MAX / math.expm1(_SERIES_MAX)         # 1 / (e - 1)


def _uses_series(dtype: torch.dtype) -> bool:
    """True for float32 (bf16/fp16 are promoted to it before the likelihood): avoid expm1, use series + exp."""
    return torch.finfo(dtype).bits < 64


def _series_(v2: torch.Tensor, coeffs: tuple[float, ...], out: torch.Tensor) -> torch.Tensor:
    """out = sum_j coeffs[j] * v2 ** (j + 1) by Horner's rule, written into ``out``."""
    torch.mul(v2, coeffs[-1], out=out)
    for a in reversed(coeffs[:-1]):
        out.add_(a).mul_(v2)
    return out


class _EdgeMasks:
    """Float 0/1 masks (B, 8, 1, L) of the open-ended edge bins and the argument floors that drop edge factors."""

    def __init__(self, xs: torch.Tensor, half_bin: float, series: bool, w_min: float) -> None:
        xs4 = xs.unsqueeze(2)
        # One allocation for all six; with M = 3 each is a third of a (B, 8, M, L) tensor.
        block = xs.new_empty((6,) + xs4.shape)
        # The comparisons of _log_prob_autograd, so that both agree on which samples are edge bins.
        self.not_upper = torch.le(xs4, 1.0 - half_bin, out=block[0])
        self.not_lower = torch.ge(xs4, -1.0 + half_bin, out=block[1])
        self.interior = torch.mul(self.not_upper, self.not_lower, out=block[2])
        # sigmoid(clamp(p, floor_p, 40)) is sigmoid(p) with the clamps, or exactly 1 at the upper edge (p's factor
        # drops): floor_p = -80 + 120 * (1 - not_upper).
        shift = _ONE_AT - _SIGMOID_FLOOR
        self.floor_p = torch.mul(self.not_upper, -shift, out=block[3]).add_(_ONE_AT)
        self.floor_m = torch.mul(self.not_lower, -shift, out=block[4]).add_(_ONE_AT)
        # 1 - exp(clamp(-w, -40, cap_w)) is exactly 1 at either edge (cap -40); inside, float32 takes it for w >= 1
        # only (series below) and float64 for all w >= w_min (the clamp of _log_prob_autograd). One term is 0.
        inside = _SERIES_MAX if series else w_min
        self.cap_w = torch.mul(self.interior, _ONE_AT, out=block[5]).sub_(_ONE_AT)
        self.cap_w.add_(self.interior, alpha=-inside)
        self.one_at = xs.new_tensor(_ONE_AT)
        self.minus_one_at = xs.new_tensor(-_ONE_AT)


def _split_params(param: torch.Tensor, num_mix: int, spec: MixtureSpec) -> tuple[torch.Tensor, ...]:
    """Views of the logits (B, M, L), raw means and log-scales (B, 8, M, L) and coefficients (B, 16, M, L)."""
    b, _, length = param.shape
    leads, coeffs = spec.num_leads, len(spec.coupling_pairs)
    per_mixture = 2 * leads + coeffs
    # split (not slicing): an autograd backward through the views is one concatenation, not one zero-filled copy
    # per slice.
    logits, rest = param.split([num_mix, per_mixture * num_mix], dim=1)
    rest = rest.reshape(b, per_mixture, num_mix, length)
    return (logits,) + tuple(rest.split([leads, leads, coeffs], dim=1))


def _tanh_(raw: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """tanh(raw) = 2 sigmoid(2 raw) - 1 written into ``out``.

    This torch's float32 tanh is slower than its sigmoid. The absolute error is ~1e-7, that of float32 tanh near
    +-1, and the absolute error is what enters mu + C x.
    """
    return torch.mul(raw, 2.0, out=out).sigmoid_().mul_(2.0).sub_(1.0)


def _scaled_residual(means: torch.Tensor, coeffs: torch.Tensor, raw_log_s: torch.Tensor, xs: torch.Tensor,
                     half_bin: float, spec: MixtureSpec,
                     inv_s_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q = c / s with c = xs - (mu + C xs) (a new tensor) and d = h / s (written into ``inv_s_out``), B, 8, M, L."""
    c = torch.sub(xs.unsqueeze(2), means)
    # c -= C x as one multiply-add per coefficient on (B, M, L) slices: no (B, 16, M, L) product is materialised.
    for k, (row, col) in enumerate(spec.coupling_pairs):
        c[:, row].addcmul_(coeffs[:, k], xs[:, col].unsqueeze(1), value=-1.0)
    inv_s = torch.clamp(raw_log_s, min=spec.log_scale_min, out=inv_s_out).mul_(-1.0).exp_()
    return c.mul_(inv_s), inv_s.mul_(half_bin)


class _MixtureLogProb(torch.autograd.Function):
    """log p(x) (B, L) of the 8-lead mixture from raw decoder parameters (B, 33 M, L) and xs = 2x - 1 (B, 8, L).

    Differentiable w.r.t. the parameters only (x is data). The backward uses d log sigmoid(z)/dz = sigmoid(-z),
    d log(1 - exp(-w))/dw = 1/expm1(w), d/dc = (d/dp - d/dm)/s and, as p, m, w are proportional to exp(-log_s),
    d/dlog_s = -(p d/dp + m d/dm + w d/dw); the mixture weights' gradient is softmax(S) - softmax(logits).
    Fresh (B, 8, M, L)-sized memory is kept low, as its first touch costs page faults on CPU: 4 tensors' worth in
    the forward, the gradient plus 3 in the backward (the gradient's own slots serve as scratch).
    """

    @staticmethod
    def forward(ctx, param: torch.Tensor, xs: torch.Tensor, num_mix: int, half_bin: float,
                spec: MixtureSpec) -> torch.Tensor:
        series = _uses_series(param.dtype)
        masks = _EdgeMasks(xs, half_bin, series, spec.w_min)
        logits, means, raw_log_s, raw_coeffs = _split_params(param, num_mix, spec)
        # The coefficients' storage becomes two (B, 8, M, L) temporaries once the coupling is done.
        work = param.new_empty((2,) + means.shape)
        coeffs = _tanh_(raw_coeffs, out=work.view(raw_coeffs.shape))
        q, d = _scaled_residual(means, coeffs, raw_log_s, xs, half_bin, spec, inv_s_out=torch.empty_like(means))
        tmp, prod = work[0], work[1]
        # prod = sigmoid(p~) * sigmoid(m~) * (1 - exp(-w~)) with the clamped / edge-shifted arguments.
        torch.clamp(torch.mul(d, -2.0, out=prod), masks.minus_one_at, masks.cap_w, out=prod)
        if series:
            prod.exp_().neg_().add_(1.0)                          # w >= 1 here: 1 - exp(-w) does not cancel
        else:
            prod.expm1_().neg_()
        prod.mul_(torch.clamp(torch.add(q, d, out=tmp), masks.floor_p, masks.one_at, out=tmp).sigmoid_())
        prod.mul_(torch.clamp(torch.sub(d, q, out=tmp), masks.floor_m, masks.one_at, out=tmp).sigmoid_())
        lp = prod.log_()
        # Log space: the parts of log sigmoid below the clamp, min(z + 80, 0), where the factor was not dropped
        # (p and m are recomputed: cheaper than keeping them in fresh memory).
        lp.addcmul_(torch.add(q, d, out=tmp).clamp_(max=_SIGMOID_FLOOR).sub_(_SIGMOID_FLOOR), masks.not_upper)
        lp.addcmul_(torch.sub(d, q, out=tmp).clamp_(max=_SIGMOID_FLOOR).sub_(_SIGMOID_FLOOR), masks.not_lower)
        if series:
            # The rest of log(1 - exp(-w)) for w < 1 (0 for w >= 1): log(w) - log(1 - exp(-1)) - w/2 + series(w^2),
            # with w = max(2h / s, w_min) and log(w) = log(2h) - max(raw, log_scale_min) taken without a logarithm.
            log_2h = math.log(2.0 * half_bin)
            logw = torch.mul(raw_log_s, -1.0, out=q).add_(log_2h - _LOG_WIDTH_AT_MAX)
            logw.clamp_(math.log(spec.w_min) - _LOG_WIDTH_AT_MAX,
                        min(log_2h - spec.log_scale_min, 0.0) - _LOG_WIDTH_AT_MAX)
            v = torch.mul(d, 2.0, out=tmp).clamp_(spec.w_min, _SERIES_MAX)
            logw.add_(v, alpha=-0.5).add_(_series_(v.mul_(v), _LOG_WIDTH_SERIES, out=d))
            lp.addcmul_(logw, masks.interior)
        total = lp.sum(dim=1).add_(torch.log_softmax(logits, dim=1))                 # B, M, L
        top = total.amax(dim=1, keepdim=True)
        out = torch.sub(total, top).clamp_(min=_EXP_FLOOR).exp_().sum(dim=1).log_().add_(top.squeeze(1))  # B, L
        ctx.num_mix, ctx.half_bin, ctx.spec = num_mix, half_bin, spec
        ctx.save_for_backward(param, xs, total, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        param, xs, total, out = ctx.saved_tensors
        num_mix, half_bin, spec = ctx.num_mix, ctx.half_bin, ctx.spec
        series = _uses_series(param.dtype)
        masks = _EdgeMasks(xs, half_bin, series, spec.w_min)
        logits, means, raw_log_s, raw_coeffs = _split_params(param, num_mix, spec)
        grad = torch.empty(param.shape, dtype=param.dtype, device=param.device)
        # The gradient's own slots serve as scratch before their final values are written.
        g_logits, g_means, g_log_s, g_coeffs = _split_params(grad, num_mix, spec)
        # Mixture: d out / d total = softmax(total) (responsibilities); d/d logits = responsibilities - weights.
        g = grad_out.unsqueeze(1)                                                     # B, 1, L
        resp = torch.sub(total, out.unsqueeze(1)).clamp_(min=_EXP_FLOOR).exp_().mul_(g)   # B, M, L
        torch.sub(resp, torch.softmax(logits, dim=1).mul_(g), out=g_logits)
        g_lp = resp.unsqueeze(1)                                                      # B, 1, M, L

        coeffs = _tanh_(raw_coeffs, out=g_coeffs)
        q, d = _scaled_residual(means, coeffs, raw_log_s, xs, half_bin, spec, inv_s_out=g_log_s)
        # a = dL/dp = sigmoid(-p) (in g_means' slot) and e = dL/dm = sigmoid(-m) (m = -n), zero where the edge bin
        # dropped the factor; arguments capped at 40 as in the forward (sigmoid(40) is 1).
        a = torch.add(q, d, out=g_means).clamp_(min=-_ONE_AT).neg_().sigmoid_().mul_(masks.not_upper).mul_(g_lp)
        e = torch.sub(q, d).clamp_(max=_ONE_AT).sigmoid_().mul_(masks.not_lower).mul_(g_lp)
        # With p = q + d, m = d - q: p a + m e = q (a - e) + d (a + e), and dL/dc = (a - e) / s = (a - e) d / h.
        a_m_e = torch.sub(a, e)
        a_p_e = a.add_(e)
        acc = q.mul_(a_m_e).addcmul_(a_p_e, d)                   # p a + m e
        torch.mul(a_m_e, d, out=g_means).mul_(-1.0 / half_bin)   # dL/dmu = -dL/dc
        # w dL/dw = g w / expm1(w) at interior samples; 0 where the forward clamped w at w_min (torch.clamp passes
        # no gradient at the bound itself, and neither does this).
        w = torch.mul(d, 2.0, out=a_m_e)
        psi, scratch = e, d
        if series:
            # psi(w) = w / expm1(w) = psi_large(max(w, 1)) + psi_small(min(w, 1)) - psi(1) (one of them is psi(1)).
            # psi_large(v) = v sigmoid(-v) / (1 - 2 sigmoid(-v)): no cancellation for v >= 1, and sigmoid is this
            # torch's fastest float32 transcendental.
            big = torch.clamp(w, min=_SERIES_MAX, out=psi)
            sig = torch.mul(big, -1.0, out=scratch).sigmoid_()
            big.mul_(sig).div_(sig.mul_(-2.0).add_(1.0))
            v = w.clamp_(max=_SERIES_MAX)
            psi.add_(v, alpha=-0.5).add_(1.0 - _PSI_AT_MAX).mul_(torch.gt(v, spec.w_min, out=scratch))
            # The even part (v^2 / 12 - ...) needs no mask: where v <= w_min, v^2 is 0 in float32.
            psi.add_(_series_(v.mul_(v), _PSI_SERIES, out=scratch))
        else:
            v = torch.clamp(w, min=spec.w_min, out=psi)
            psi.div_(torch.expm1(v, out=scratch)).mul_(torch.gt(w, spec.w_min, out=scratch))
        acc.addcmul_(psi.mul_(g_lp), masks.interior)
        # dL/draw = -acc where raw > log_scale_min, 0 at and below the bound (torch.clamp's convention).
        torch.mul(acc, torch.le(raw_log_s, spec.log_scale_min, out=scratch).sub_(1.0), out=g_log_s)
        # Coupling: d c_row / d coeff_k = -xs_col, so dL/dcoeff_k = dL/dmu_row * xs_col; tanh' = 1 - tanh^2.
        one_m_c2 = g_coeffs.mul_(g_coeffs).neg_().add_(1.0)
        for k, (row, col) in enumerate(spec.coupling_pairs):
            one_m_c2[:, k].mul_(g_means[:, row]).mul_(xs[:, col].unsqueeze(1))
        return grad, None, None, None, None


def mixture_log_prob(param: torch.Tensor, xs: torch.Tensor, num_mix: int, half_bin: float,
                     spec: MixtureSpec) -> torch.Tensor:
    """log p(x) (B, L) of the lead-coupled logistic mixture from raw parameters and xs = 2x - 1 (x is data)."""
    return _MixtureLogProb.apply(param, xs, num_mix, half_bin, spec)


# -- allocator ---------------------------------------------------------------------------------------------------
#: glibc mallopt parameters (malloc.h): M_TRIM_THRESHOLD, M_MMAP_MAX.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_cpu_memory() -> bool:
    """Let glibc reuse freed CPU tensors instead of unmapping them (no page faults per step); True if applied.

    By default glibc serves every allocation above a dynamic threshold (at most 32 MiB) with a fresh ``mmap`` and
    unmaps it on free, so each training step page-faults its large activations, weights and gradients in again.
    Turning ``mmap`` off for allocations (M_MMAP_MAX = 0) and trimming off (M_TRIM_THRESHOLD = -1) keeps every
    freed buffer in the heap; the step's allocation pattern repeats, so the heap settles at the step's peak. Same
    effect as ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=-1``; a no-op (False) elsewhere than glibc on Linux and
    when the kernels are switched off.
    """
    if not _enabled or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # M_TRIM_THRESHOLD -1 (SIZE_MAX inside glibc) disables trimming: a positive threshold is at most 2 GiB, and
    # `paper` frees more than that at the top of the heap within a step, which was returned and faulted in again.
    ok = mallopt(_M_MMAP_MAX, 0) == 1
    return mallopt(_M_TRIM_THRESHOLD, -1) == 1 and ok
