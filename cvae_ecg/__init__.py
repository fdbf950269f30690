"""cvae_ecg: a PyTorch port of the conditional VAE of Sang, Beetz & Grau (ISBI 2022, YulingSang/CVAE_ECG).

Modules: :mod:`cvae_ecg.config` (presets ``paper`` and ``ecg``), :mod:`cvae_ecg.model` (the network and its loss),
:mod:`cvae_ecg.data` (the generator dataset with demographic condition vectors), :mod:`cvae_ecg.train` and
:mod:`cvae_ecg.generate` (entry points). The package imports :mod:`nvae_ecg`, never the other way round.

Example::

    python -m cvae_ecg.model --config paper
"""
