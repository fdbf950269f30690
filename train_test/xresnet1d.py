"""XResNet1d101, the 1-D ECG classifier of the PTB-XL benchmark, built from fastai's layers.

The architecture is the one of Strodthoff et al. (2021, "Deep learning for ECG
analysis: benchmarks and insights from PTB-XL"), file ``code/models/xresnet1d.py``
of helme/ecg_ptbxl_benchmarking, which the cNVAE-ECG authors use for every
downstream benchmark: a stem of three ConvLayers 12->32->32->64 (kernel 5, the
first with stride 2), max-pool 3/2/1, four stages of bottleneck ResBlocks
(expansion 4) whose width is 64 in *every* stage (not fastai's image widths
64/128/256/512: this is what makes the 1-D model small), 3/4/23/3 blocks, kernel 5,
strides 1/2/2/2, and a head concat-pool -> flatten -> BatchNorm1d(512) ->
dropout 0.5 -> Linear(512, n_out). With 12 leads in that is 1,806,209 parameters
for one output and 1,809,800 for eight. Weights are initialised as in the benchmark
(``init_cnn``: Kaiming-normal convolutions and linear layers, zero biases; fastai's
ResBlock already zero-initialises the last BatchNorm of each residual branch).
fastai is imported here only, because its import takes several seconds.

Example::

    python -m train_test.xresnet1d --arch xresnet1d101 --n_out 1
"""

from __future__ import annotations

import argparse
import warnings
from typing import Sequence

import torch
from torch import nn

with warnings.catch_warnings():
    # fastai's import decorates functions with the deprecated torch.jit.script; the warning is not ours to fix.
    warnings.simplefilter("ignore", FutureWarning)
    from fastai.layers import AdaptiveConcatPool1d, ConvLayer, Flatten, ResBlock

from nvae_ecg.run import count_parameters  # noqa: E402  (also re-exported: sizes of the models built here)
from train_test.archs import ARCHS  # noqa: E402


class XResNet1d(nn.Sequential):
    """Stem, max-pool, residual stages and a concat-pool head; ``self[-1][-1]`` is the output Linear."""

    def __init__(self, n_in: int = 12, n_out: int = 1, layers: Sequence[int] = (3, 4, 23, 3), width: int = 64,
                 expansion: int = 4, stem: Sequence[int] = (32, 32, 64), kernel_size: int = 5,
                 kernel_size_stem: int = 5, p_dropout: float = 0.5):
        if stem[-1] % expansion:
            raise ValueError(f"the stem width {stem[-1]} must be divisible by the expansion {expansion}")
        widths = [n_in, *stem]
        stem_layers = [ConvLayer(widths[i], widths[i + 1], ks=kernel_size_stem, stride=2 if i == 0 else 1, ndim=1)
                       for i in range(len(stem))]
        # ResBlock multiplies ni and nf by the expansion itself, so the first stage starts from stem/expansion.
        ni = stem[-1] // expansion
        stages = []
        for i, n_blocks in enumerate(layers):
            blocks = [ResBlock(expansion, ni if j == 0 else width, width, stride=(1 if i == 0 else 2) if j == 0 else 1,
                               ks=kernel_size, ndim=1) for j in range(n_blocks)]
            stages.append(nn.Sequential(*blocks))
            ni = width
        n_feat = 2 * width * expansion  # concat pooling doubles the channels
        head = nn.Sequential(AdaptiveConcatPool1d(1), Flatten(), nn.BatchNorm1d(n_feat), nn.Dropout(p_dropout),
                             nn.Linear(n_feat, n_out))
        super().__init__(*stem_layers, nn.MaxPool1d(kernel_size=3, stride=2, padding=1), *stages, head)
        _init_cnn(self)

    @property
    def n_out(self) -> int:
        """Number of outputs of the final Linear layer."""
        return self[-1][-1].out_features


def _init_cnn(m: nn.Module) -> None:
    # Same rule as the benchmark's init_cnn: Kaiming-normal weights, zero biases (BatchNorms untouched).
    if getattr(m, "bias", None) is not None and isinstance(m.bias, torch.Tensor):
        nn.init.constant_(m.bias, 0.0)
    if isinstance(m, (nn.Conv1d, nn.Linear)):
        nn.init.kaiming_normal_(m.weight)
    for child in m.children():
        _init_cnn(child)


def build_model(arch: str = "xresnet1d101", n_in: int = 12, n_out: int = 1) -> XResNet1d:
    """An XResNet1d of a named configuration (see ``ARCHS``)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHS)}")
    return XResNet1d(n_in=n_in, n_out=n_out, **ARCHS[arch])


def xresnet1d101(n_in: int = 12, n_out: int = 1) -> XResNet1d:
    """The paper's classifier: XResNet1d101 with ``n_in`` leads and ``n_out`` logits."""
    return build_model("xresnet1d101", n_in, n_out)


def replace_head(model: XResNet1d, n_out: int) -> XResNet1d:
    """Swap the output Linear for a freshly initialised one with ``n_out`` outputs (fine-tuning); in place."""
    old = model[-1][-1]
    new = nn.Linear(old.in_features, n_out).to(device=old.weight.device, dtype=old.weight.dtype)
    _init_cnn(new)
    model[-1][-1] = new
    return model


def head_parameter_names(model: XResNet1d) -> set[str]:
    """Names (as in ``state_dict``) of the parameters that :func:`replace_head` replaces."""
    prefix = f"{len(model) - 1}.{len(model[-1]) - 1}."
    return {n for n in model.state_dict() if n.startswith(prefix)}


def parse_args(argv=None) -> argparse.Namespace:
    """Flags of the parameter-count printout."""
    p = argparse.ArgumentParser(prog="python -m train_test.xresnet1d",
                                description="Print the layer structure and parameter count of an XResNet1d.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", default="xresnet1d101", choices=tuple(ARCHS), help="architecture")
    p.add_argument("--n_in", type=int, default=12, help="input leads")
    p.add_argument("--n_out", type=int, default=1, help="output logits")
    p.add_argument("--length", type=int, default=5000, help="samples of the dummy input used to check the forward")
    p.add_argument("--verbose", action="store_true", help="print the whole module tree")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    """Build the model, run a dummy forward and print the parameter count."""
    model = build_model(args.arch, args.n_in, args.n_out).eval()
    if args.verbose:
        print(model)
    with torch.no_grad():
        y = model(torch.zeros(2, args.n_in, args.length))
    print(f"{args.arch}: {args.n_in} leads -> {args.n_out} outputs, {count_parameters(model):,} parameters, "
          f"output shape {tuple(y.shape)}")


if __name__ == "__main__":
    main(parse_args())
