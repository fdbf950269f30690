"""Building blocks of the cNVAE-ECG network in 1-D or 2-D: weight-normalised convolutions, residual cells, combiners.

This is a dimension-generic re-implementation of NVAE's ``neural_operations.py``
(Vahdat & Kautz 2020, Sec. 3.1 and Fig. 3). Every block takes ``ndim`` (1 for the
signal model cNVAE-ECG, 2 for the STFT variant 2D-cNVAE-ECG; default 1) and only
picks the matching primitive from it: convolutions carry NVAE's weight
normalisation with a learned per-channel log-norm (:class:`Conv1D` / :class:`Conv2D`,
both :class:`WeightNormConv`), residual cells are ``skip + 0.1 * SE(op2(op1(x)))``
with BN-ELU-conv (``res_bnelu``, the paper's choice) or BN-Swish-conv
(``res_bnswish``) operations and BatchNorm1d/2d, down-sampling cells use a
factorised-reduce skip (two shifted stride-2 1x1 convs in 1-D, NVAE's four in 2-D),
up-sampling cells use linear/bilinear interpolation plus a 1x1 convolution on the
skip and nearest-neighbour up-sampling inside the op branch (as NVAE's
``BNSwishConv`` does with ``stride == -1``), and squeeze-and-excitation averages
over every spatial axis. The encoder combiner adds a 1x1-projected decoder state
to the encoder state; the decoder combiner concatenates a latent sample and mixes
it in with a 1x1 convolution. The CPU fast paths (ELU through exp2, training-mode BatchNorm + activation
as one autograd function, float32 1-D convolutions through ATen's im2col + GEMM kernel) live in
:mod:`nvae_ecg.kernels` behind its one switch; switched off (or ``BNActConv.fused = False`` per module) the
blocks run the plain ``nn.BatchNorm``, ``F.elu`` and ``F.conv1d``.

Example::

    python -c "import torch; from nvae_ecg.neural_operations import Cell; print(Cell(8, 16, 'down', 'res_bnelu', True)(torch.randn(2, 8, 100)).shape, Cell(8, 16, 'down', 'res_bnelu', True, ndim=2)(torch.randn(2, 8, 16, 32)).shape)"
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from nvae_ecg import kernels
from nvae_ecg.weight_norm import weight_norm, weight_norm_reference

#: BatchNorm settings of NVAE (neural_operations.py: BN_EPS = 1e-5, momentum 0.05).
BN_EPS = 1e-5
BN_MOMENTUM = 0.05
#: Channel factor of every down/up-sampling cell (NVAE model.py CHANNEL_MULT).
CHANNEL_MULT = 2
#: Residual branch scale of a cell (NVAE model.py Cell.forward: skip + 0.1 * s).
RESIDUAL_SCALE = 0.1

CELL_TYPES = ("normal", "down", "up")
#: Spatial dimensionalities the blocks support (1: signals, 2: spectrograms).
NDIMS = (1, 2)


def _check_ndim(ndim: int) -> None:
    if ndim not in NDIMS:
        raise ValueError(f"ndim must be one of {NDIMS} (1: signal, 2: spectrogram), got {ndim!r}")


class ELU(nn.Module):
    """ELU (alpha 1); on CPU through :func:`nvae_ecg.kernels.elu` (exp2-based, faster than ATen's expm1 kernel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply ELU."""
        # Device (not data) dispatch: CUDA's fused F.elu is already fast and supports double backward.
        if x.device.type == "cpu" and kernels.enabled():
            return kernels.elu(x)
        return F.elu(x)


class WeightNormConv:
    """NVAE's weight normalisation (learned log-norm per output channel) for an nn.Conv1d / nn.Conv2d subclass.

    The normalised weight is computed in ``forward`` with a handful of tensor ops. A parent model may instead
    hand in weights normalised for many layers at once (``batched_weight_norm``), which saves thousands of tiny
    kernel launches per step in a deep NVAE; the layer then uses ``weight_override`` for the duration.
    Subclasses set ``_conv_fn`` (F.conv1d or F.conv2d) and call ``_init_weight_norm`` after the conv's init.
    """

    _conv_fn = None
    weight: torch.Tensor

    def _init_weight_norm(self) -> None:
        # NVAE Conv2D.__init__: log-norm starts at the initial weight norm, so the layer starts as a plain conv
        # (up to the +1e-2 NVAE adds inside the log).
        with torch.no_grad():
            init = torch.linalg.vector_norm(self.weight, dim=tuple(range(1, self.weight.dim())), keepdim=True)
        self.log_weight_norm = nn.Parameter(torch.log(init + 1e-2))
        self.weight_override: Optional[torch.Tensor] = None

    def normalized_weight(self) -> torch.Tensor:
        """The weight actually used by the convolution."""
        # Per layer (batch_weight_norm off) the expression is differentiated by autograd, as the authors' code did.
        return weight_norm_reference(self.weight, self.log_weight_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve with the normalised weight."""
        w = self.weight_override
        if w is None:
            w = self.normalized_weight()
        return self._convolve(x, w)

    def _convolve(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self._conv_fn(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Conv1D(WeightNormConv, nn.Conv1d):
    """nn.Conv1d with NVAE's weight normalisation (see :class:`WeightNormConv`).

    On CPU in float32 it picks the convolution kernel by shape (:func:`nvae_ecg.kernels.use_gemm_conv`): ATen's
    im2col + GEMM kernel where oneDNN, torch's choice for every float32 conv, is slow. Both compute F.conv1d.
    """

    _conv_fn = staticmethod(F.conv1d)

    def _convolve(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self._gemm_capable and kernels.use_gemm_conv(x, w):
            return kernels.gemm_conv1d(x, w, self.bias, self.stride[0], self.padding[0])
        return F.conv1d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1, bias: bool = False) -> None:
        nn.Conv1d.__init__(self, c_in, c_out, kernel_size, stride=stride, padding=padding, dilation=dilation,
                           groups=groups, bias=bias)
        self._init_weight_norm()
        # What ATen's GEMM kernel (thnn_conv2d) takes: no groups, no dilation, numeric padding; fixed per layer.
        self._gemm_capable = groups == 1 and dilation == 1 and not isinstance(padding, str)


class Conv2D(WeightNormConv, nn.Conv2d):
    """nn.Conv2d (square kernel, same stride and padding on both axes) with NVAE's weight normalisation."""

    _conv_fn = staticmethod(F.conv2d)

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1, bias: bool = False) -> None:
        nn.Conv2d.__init__(self, c_in, c_out, kernel_size, stride=stride, padding=padding, dilation=dilation,
                           groups=groups, bias=bias)
        self._init_weight_norm()


#: Weight-normalised convolution, BatchNorm and interpolation mode of each spatial dimensionality.
CONV_CLASSES = {1: Conv1D, 2: Conv2D}
BATCHNORM_CLASSES = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}
LINEAR_INTERPOLATION = {1: "linear", 2: "bilinear"}


def conv_nd(ndim: int, c_in: int, c_out: int, kernel_size: int, stride: int = 1, padding: int = 0,
            bias: bool = False) -> WeightNormConv:
    """Weight-normalised Conv1D (ndim 1) or Conv2D (ndim 2)."""
    _check_ndim(ndim)
    return CONV_CLASSES[ndim](c_in, c_out, kernel_size, stride=stride, padding=padding, bias=bias)


def group_by_weight_shape(convs: Iterable[WeightNormConv]) -> list[list[WeightNormConv]]:
    """Partition weight-normalised convs into lists with identical weight shapes (stable order)."""
    groups: dict[tuple[int, ...], list[Conv1D]] = {}
    for c in convs:
        groups.setdefault(tuple(c.weight.shape), []).append(c)
    return list(groups.values())


def normalized_weights_batched(group: Sequence[WeightNormConv]) -> torch.Tensor:
    """Normalised weights (G, C_out, C_in, *k) of same-shape convs, computed in one batch of tensor ops."""
    w = torch.stack([c.weight for c in group])
    lw = torch.stack([c.log_weight_norm for c in group])
    # One autograd node with a hand-written backward (nvae_ecg.weight_norm): a third of the passes over the
    # weights that autograd makes of weight_norm_reference, which dominate `paper` steps at small batches.
    return weight_norm(w.flatten(0, 1), lw.flatten(0, 1)).view_as(w)


@contextlib.contextmanager
def batched_weight_norm(groups: Sequence[Sequence[WeightNormConv]]):
    """Within the block, every conv of ``groups`` uses a weight normalised together with its shape group."""
    try:
        for group in groups:
            for conv, w in zip(group, normalized_weights_batched(group).unbind(0)):
                conv.weight_override = w
        yield
    finally:
        for group in groups:
            for conv in group:
                conv.weight_override = None


class BNActConv(nn.Module):
    """BatchNorm -> activation -> (x2 nearest up-sampling) -> k3 conv: NVAE's BNELUConv / BNSwishConv in 1-D or 2-D.

    ``stride`` is 1 (normal), 2 (down) or -1 (up: nearest-neighbour x2 before the conv, as NVAE). In training on
    CPU, BatchNorm and activation run as one autograd function (:func:`nvae_ecg.kernels.bn_act_train`, same
    numbers in fewer passes) unless the kernels are switched off, ``fused`` is set to False (the benchmark's
    ``original`` mode) or ``bn``/``act`` were replaced (e.g. by nn.SyncBatchNorm); the parameters and buffers stay
    those of ``bn``.
    """

    #: BatchNorm classes the fused path reproduces exactly (subclasses such as SyncBatchNorm may differ).
    FUSABLE_BN = (nn.BatchNorm1d, nn.BatchNorm2d)

    def __init__(self, c_in: int, c_out: int, act: str, stride: int = 1, kernel_size: int = 3,
                 ndim: int = 1) -> None:
        super().__init__()
        _check_ndim(ndim)
        if stride not in (1, 2, -1):
            raise ValueError(f"stride must be 1, 2 or -1 (up), got {stride}")
        self.upsample = stride == -1
        self.bn = BATCHNORM_CLASSES[ndim](c_in, eps=BN_EPS, momentum=BN_MOMENTUM)
        if act == "elu":
            self.act = ELU()
        elif act == "swish":
            self.act = nn.SiLU()
        else:
            raise ValueError(f"unknown activation {act!r}; choose 'elu' or 'swish'")
        self.conv = conv_nd(ndim, c_in, c_out, kernel_size, stride=abs(stride), padding=kernel_size // 2, bias=True)
        #: Use the fused BatchNorm-activation function where it applies (False: plain module calls).
        self.fused = True

    def fused_act(self, x: torch.Tensor) -> Optional[str]:
        """The kernels.FUSED_ACTS name that kernels.bn_act_train would use for x, or None for the module path."""
        bn = self.bn
        if not (self.fused and kernels.enabled() and bn.training and type(bn) in self.FUSABLE_BN and bn.affine
                and bn.track_running_stats):
            return None
        # CPU only (CUDA's cuDNN BatchNorm is already fused), matching dtypes (no autocast mix), more than one
        # value per channel (nn.BatchNorm raises its own error), and eager mode (torch.compile fuses by itself).
        if x.device.type != "cpu" or x.dtype != bn.weight.dtype or x.numel() <= x.shape[1]:
            return None
        if torch.compiler.is_compiling():
            return None
        if type(self.act) is ELU:
            return "elu"
        if type(self.act) is nn.SiLU:
            return "silu"
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply BN, activation, optional up-sampling and the convolution."""
        act = self.fused_act(x)
        out = self.act(self.bn(x)) if act is None else kernels.bn_act_train(self.bn, x, act)
        if self.upsample:
            out = F.interpolate(out, scale_factor=2, mode="nearest")
        return self.conv(out)


#: Operation of each residual-cell architecture (NVAE utils.get_arch_cells: two identical ops per cell).
ARCH_OPS = {"res_bnelu": "elu", "res_bnswish": "swish"}


class FactorizedReduce(nn.Module):
    """Down-sampling skip: swish, then stride-2 1x1 convs on shifted copies of x, concatenated over channels.

    NVAE's FactorizedReduce: in 2-D four convs see x shifted by (0, 0), (1, 1), (0, 1) and (1, 0) and give
    c_out // 4 channels each (the last one the remainder); the 1-D version uses the two shifts 0 and 1 with
    c_out // 2 channels each. Needs even spatial sizes.
    """

    def __init__(self, c_in: int, c_out: int, ndim: int = 1) -> None:
        super().__init__()
        _check_ndim(ndim)
        self.ndim = ndim
        parts = 2 ** ndim
        widths = [c_out // parts] * (parts - 1) + [c_out - (parts - 1) * (c_out // parts)]
        # conv_1, conv_2 (, conv_3, conv_4): NVAE's attribute names, which also keeps 1-D checkpoints loadable.
        for i, w in enumerate(widths):
            setattr(self, f"conv_{i + 1}", conv_nd(ndim, c_in, w, 1, stride=2, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Halve every spatial size and map to c_out channels."""
        out = F.silu(x)
        if self.ndim == 1:
            return torch.cat([self.conv_1(out), self.conv_2(out[:, :, 1:])], dim=1)
        return torch.cat([self.conv_1(out), self.conv_2(out[:, :, 1:, 1:]), self.conv_3(out[:, :, :, 1:]),
                          self.conv_4(out[:, :, 1:, :])], dim=1)


class UpSampleSkip(nn.Module):
    """Up-sampling skip: (bi)linear interpolation x2 (align_corners=True, NVAE UpSample) then a 1x1 conv."""

    def __init__(self, c_in: int, c_out: int, ndim: int = 1) -> None:
        super().__init__()
        _check_ndim(ndim)
        self.mode = LINEAR_INTERPOLATION[ndim]
        self.conv = conv_nd(ndim, c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Double every spatial size and map to c_out channels."""
        return self.conv(F.interpolate(x, scale_factor=2, mode=self.mode, align_corners=True))


class SE(nn.Module):
    """NVAE's squeeze-and-excitation: spatial mean, Linear-ReLU-Linear-sigmoid gate, hidden max(C//16, 4)."""

    def __init__(self, c_in: int, c_out: int, ndim: int = 1) -> None:
        super().__init__()
        _check_ndim(ndim)
        hidden = max(c_out // 16, 4)
        self.se = nn.Sequential(nn.Linear(c_in, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, c_out),
                                nn.Sigmoid())
        self.dims = tuple(range(2, 2 + ndim))
        self.ones = (1,) * ndim

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The learned per-channel gate (B, C, 1, ...) of x, broadcastable against it."""
        gate = self.se(x.mean(dim=self.dims))
        return gate.view(gate.shape + self.ones)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rescale channels by the learned gate."""
        return x * self.gate(x)


class Cell(nn.Module):
    """Residual cell ``skip(x) + 0.1 * SE(op2(op1(x)))`` (NVAE model.py Cell), 1-D or 2-D (``ndim``).

    ``cell_type`` is ``normal`` (same shape), ``down`` (channels x2, spatial sizes /2, stride-2 first op and a
    factorised-reduce skip) or ``up`` (channels /2, spatial sizes x2).
    """

    def __init__(self, c_in: int, c_out: int, cell_type: str, arch: str, use_se: bool, ndim: int = 1) -> None:
        super().__init__()
        _check_ndim(ndim)
        if cell_type not in CELL_TYPES:
            raise ValueError(f"unknown cell type {cell_type!r}; choose one of {CELL_TYPES}")
        if arch not in ARCH_OPS:
            raise ValueError(f"unknown arch_instance {arch!r}; choose one of {tuple(ARCH_OPS)}")
        self.cell_type = cell_type
        if cell_type == "normal":
            if c_in != c_out:
                raise ValueError(f"a normal cell keeps the channels, got {c_in} -> {c_out}")
            self.skip = nn.Identity()
            stride = 1
        elif cell_type == "down":
            self.skip = FactorizedReduce(c_in, c_out, ndim=ndim)
            stride = 2
        else:
            self.skip = UpSampleSkip(c_in, c_out, ndim=ndim)
            stride = -1
        act = ARCH_OPS[arch]
        self.ops = nn.Sequential(BNActConv(c_in, c_out, act, stride=stride, ndim=ndim),
                                 BNActConv(c_out, c_out, act, stride=1, ndim=ndim))
        self.se = SE(c_out, c_out, ndim=ndim) if use_se else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual update of x."""
        h = self.ops(x)
        if isinstance(self.se, SE):
            # skip + 0.1 * (h * gate) as one multiply-add: one pass over the activations instead of three, and
            # fewer in the backward.
            return torch.addcmul(self.skip(x), h, self.se.gate(h), value=RESIDUAL_SCALE)
        return self.skip(x) + RESIDUAL_SCALE * h


class EncCombinerCell(nn.Module):
    """Encoder combiner of NVAE: ``x_enc + conv1x1(x_dec)`` (conditions q on the decoder state)."""

    def __init__(self, c_enc: int, c_dec: int, ndim: int = 1) -> None:
        super().__init__()
        self.conv = conv_nd(ndim, c_dec, c_enc, 1, bias=True)

    def forward(self, x_enc: torch.Tensor, x_dec: torch.Tensor) -> torch.Tensor:
        """Combine the stored encoder feature with the current decoder state."""
        return x_enc + self.conv(x_dec)


class DecCombinerCell(nn.Module):
    """Decoder combiner of NVAE: ``conv1x1(cat[s, z])`` (injects a latent group into the decoder state)."""

    def __init__(self, c_dec: int, c_z: int, ndim: int = 1) -> None:
        super().__init__()
        self.conv = conv_nd(ndim, c_dec + c_z, c_dec, 1, bias=True)

    def forward(self, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Mix the latent sample into the decoder state."""
        # Under autocast z is float32 and s bf16: torch.cat promotes, the conv casts back to bf16.
        return self.conv(torch.cat([s, z], dim=1))
