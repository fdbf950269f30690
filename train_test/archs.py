"""Named XResNet1d configurations, kept apart from the model so flags can list them without importing fastai.

``xresnet1d101`` is the paper's classifier (PTB-XL benchmark, Strodthoff et al.
2021); ``tiny`` keeps the layer types but only a few thousand parameters, for CPU
tests and smoke runs of the experiment scripts.

Example::

    python -c "from train_test.archs import ARCHS; print(ARCHS['xresnet1d101'])"
"""

from __future__ import annotations

#: Blocks per stage, stage width (the same in every stage), bottleneck expansion, stem widths.
ARCHS: dict[str, dict] = {
    "xresnet1d101": dict(layers=(3, 4, 23, 3), width=64, expansion=4, stem=(32, 32, 64)),
    "xresnet1d50": dict(layers=(3, 4, 6, 3), width=64, expansion=4, stem=(32, 32, 64)),
    "tiny": dict(layers=(1, 1, 1, 1), width=4, expansion=4, stem=(4, 4, 16)),
}
ARCH_NAMES: tuple[str, ...] = tuple(ARCHS)
