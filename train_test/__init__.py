"""Downstream benchmarks of the generators (paper Sec. IV-C, Fig. 2/3, Tables VI/VII).

``xresnet1d`` (the PTB-XL benchmark's XResNet1d101, the only module importing
fastai), ``classifier`` (training loop and model selection), ``metrics`` (AUROC,
bootstrap), ``data`` (real splits + generated sets), ``enrich_train`` and
``enrich_pretrain`` (the two experiments), ``report`` (tables and figures),
``results`` (resumable results files), ``surrogate`` (stand-in generated sets
for smoke runs) and the ``quality`` package (the synthetic-ECG quality report,
run as ``python -m train_test.evaluate_quality``).

Example::

    bash scripts/enrich_train.sh data/prepared results/generated results/enrich_train
"""
