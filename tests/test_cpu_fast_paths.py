"""Tests of the CPU fast paths that pick kernels or allocator settings: they must compute the same model.

``Conv1D`` runs selected float32 shapes through ATen's im2col + GEMM kernel instead of oneDNN
(``nvae_ecg.kernels.use_gemm_conv``); the tests check which kernel runs (through the
dispatcher) and that outputs and gradients match a float64 reference, also for a non-contiguous
input (FactorizedReduce's shifted slice). ``keep_freed_cpu_memory``
must stop the page faults of re-allocating a large freed tensor (checked in a subprocess, so the
test process keeps glibc's defaults). ``AutoEncoder.sample`` must normalise exactly the decoder's
weights in batch.

Example::

    pytest tests/test_cpu_fast_paths.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from nvae_ecg import kernels
from nvae_ecg.config import get_config
from nvae_ecg.kernels import use_gemm_conv
from nvae_ecg.model import AutoEncoder
from nvae_ecg.neural_operations import Conv1D, WeightNormConv


@pytest.fixture(autouse=True)
def _kernels_on():
    """These tests check the fast paths themselves: run them with the kernels on whatever CNVAE_KERNELS says."""
    previous = kernels.set_enabled(True)
    yield
    kernels.set_enabled(previous)


class _OpNames(TorchDispatchMode):
    """Records the ATen operators that run."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


#: (batch, C_in, length, C_out, kernel, stride) and whether the GEMM kernel is expected.
CASES = [
    ((8, 8, 600, 99, 3, 1), True),      # few input taps (the output conv of `small`)
    ((8, 36, 400, 32, 1, 1), True),     # 1x1
    ((8, 16, 400, 8, 1, 2), True),      # strided 1x1 (factorised reduce)
    ((1, 48, 640, 48, 3, 1), True),     # small problem: batch * length <= 2560
    ((8, 32, 400, 32, 3, 1), False),    # wide k3 on a big batch: oneDNN
    ((8, 32, 400, 64, 3, 2), False),    # strided k3 of a down cell: oneDNN
]


@pytest.mark.parametrize("shape,gemm", CASES)
def test_conv1d_kernel_choice_and_equivalence(shape, gemm):
    b, c_in, length, c_out, k, stride = shape
    torch.manual_seed(0)
    conv = Conv1D(c_in, c_out, k, stride=stride, padding=k // 2, bias=True)
    x = torch.randn(b, c_in, length, requires_grad=True)
    assert use_gemm_conv(x, conv.weight) is gemm
    with _OpNames() as ops:
        out = conv(x)
        out.square().sum().backward()
    # _slow_conv2d_* is ATen's im2col + GEMM kernel; aten.convolution is torch's generic entry, which picks oneDNN
    # for float32 on CPU below the dispatcher.
    assert ("_slow_conv2d_forward" in ops.names) is gemm
    assert ("convolution" in ops.names) is (not gemm)

    # float64 reference through the plain functional convolution (never the GEMM branch: float32 only).
    ref = Conv1D(c_in, c_out, k, stride=stride, padding=k // 2, bias=True).double()
    ref.load_state_dict(conv.state_dict())
    x64 = x.detach().double().requires_grad_()
    out64 = F.conv1d(x64, ref.normalized_weight(), ref.bias, ref.stride, ref.padding)
    out64.square().sum().backward()
    assert out.shape == out64.shape
    scale = out64.abs().max()
    assert (out.double() - out64).abs().max() <= 1e-5 * scale
    for got, want in ((x.grad, x64.grad), (conv.weight.grad, ref.weight.grad),
                      (conv.log_weight_norm.grad, ref.log_weight_norm.grad), (conv.bias.grad, ref.bias.grad)):
        assert (got.double() - want).abs().max() <= 1e-4 * want.abs().max()


@pytest.mark.parametrize("stride", [1, 2])
def test_gemm_conv_of_a_non_contiguous_input(stride):
    """FactorizedReduce convolves the shifted slice x[:, :, 1:]: the GEMM path's gradients must still be right."""
    torch.manual_seed(0)
    conv = Conv1D(16, 8, 1, stride=stride, bias=True)
    full = torch.randn(2, 16, 97, requires_grad=True)
    x = full[:, :, 1:]
    assert not x.is_contiguous() and use_gemm_conv(x, conv.weight)
    with _OpNames() as ops:
        out = conv(x)
        out.square().sum().backward()
    assert "_slow_conv2d_forward" in ops.names
    ref = Conv1D(16, 8, 1, stride=stride, bias=True).double()
    ref.load_state_dict(conv.state_dict())
    full64 = full.detach().double().requires_grad_()
    out64 = F.conv1d(full64[:, :, 1:], ref.normalized_weight(), ref.bias, ref.stride)
    out64.square().sum().backward()
    assert (out.double() - out64).abs().max() <= 1e-5 * out64.abs().max()
    for got, want in ((full.grad, full64.grad), (conv.weight.grad, ref.weight.grad),
                      (conv.log_weight_norm.grad, ref.log_weight_norm.grad), (conv.bias.grad, ref.bias.grad)):
        assert (got.double() - want).abs().max() <= 1e-4 * want.abs().max()


def test_gemm_conv_only_for_cpu_float32():
    w = torch.randn(4, 3, 1)
    assert use_gemm_conv(torch.randn(2, 3, 10), w)
    assert not use_gemm_conv(torch.randn(2, 3, 10, dtype=torch.float64), w.double())
    assert not use_gemm_conv(torch.randn(2, 3, 4, 4), torch.randn(4, 3, 1, 1))  # 2-D input
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast would not cast the GEMM kernel's inputs
        assert not use_gemm_conv(torch.randn(2, 3, 10), w)


_FAULTS_SCRIPT = r"""
import json, resource, sys
import torch
from nvae_ecg.kernels import keep_freed_cpu_memory
applied = keep_freed_cpu_memory() if sys.argv[1] == "1" else False
n = 64 << 20  # 64 MiB: above glibc's largest mmap threshold


def rounds(k):
    for _ in range(k):
        t = torch.empty(n // 4)
        t.fill_(1.0)
        del t


# Warm-up, as a training loop's first steps: the heap grows until freed chunks fit the (aligned) requests.
rounds(8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(5)
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_keep_freed_cpu_memory_stops_refaulting_large_tensors():
    def run(flag: str) -> dict:
        env = {**os.environ, "CNVAE_KERNELS": "1"}  # the allocator setting is one of the kernels
        out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT, flag], capture_output=True, text=True,
                             check=True, env=env)
        return json.loads(out.stdout.strip().splitlines()[-1])

    default, kept = run("0"), run("1")
    pages = 5 * (64 << 20) // 4096
    if not kept["applied"]:
        pytest.skip("not glibc: mallopt unavailable")
    # glibc's default maps and unmaps each 64 MiB tensor: every page faults again on every round; once the heap
    # has grown, the kept buffers are reused without a fault.
    assert default["faults"] > 0.5 * pages
    assert kept["faults"] < 0.05 * pages


def test_sampling_normalises_exactly_the_decoder_weights():
    torch.manual_seed(0)
    model = AutoEncoder(get_config("tiny", length=96)).eval()
    called: dict[int, bool] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, inp: called.__setitem__(id(mod), mod.weight_override is not None))
             for m in model.modules() if isinstance(m, WeightNormConv)]
    with torch.no_grad():
        model.sample(torch.eye(9)[:2])
    for h in hooks:
        h.remove()
    batched = {id(c) for group in model._dec_conv_groups for c in group}
    assert called and all(called.values())      # every conv the sampler runs got a batch-normalised weight
    assert set(called) == batched               # and no encoder weight was normalised for nothing
    everything = {id(c) for group in model._conv_groups for c in group}
    assert batched < everything


def test_bench_counts_gemm_conv_flops():
    from torch.utils.flop_counter import FlopCounterMode

    from nvae_ecg.bench import SLOW_CONV_FLOPS

    torch.manual_seed(0)
    conv = Conv1D(8, 99, 3, padding=1, bias=True)
    x = torch.randn(2, 8, 300, requires_grad=True)
    assert use_gemm_conv(x, conv.weight)
    with FlopCounterMode(display=False, custom_mapping=SLOW_CONV_FLOPS) as flops:
        conv(x).sum().backward()
    forward = 2 * 2 * 300 * 99 * 8 * 3  # 2 FLOPs per multiply-add, batch 2, 300 positions
    assert flops.get_total_flops() == 3 * forward  # forward, input gradient, weight gradient
