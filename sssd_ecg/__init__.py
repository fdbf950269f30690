"""SSSD-ECG (Alcaraz & Strodthoff 2023): a conditional diffusion generator of 12-lead ECGs with S4 layers.

``sssd_ecg.config`` holds the presets, ``sssd_ecg.s4`` the hand-written S4 layer, ``sssd_ecg.model`` the
denoiser, ``sssd_ecg.diffusion`` the DDPM schedule, loss and sampler, ``sssd_ecg.data`` the 100 Hz and
amplitude adaptations, ``sssd_ecg.train`` the trainer and ``sssd_ecg.generate`` the sampler, which writes the
generated-sample format of ``nvae_ecg.samples``. It imports ``nvae_ecg``, never the other way round. See
sssd_ecg/README.md.

Example::

    python -m sssd_ecg.train --data_dir prepared --config tiny --max_steps 20 --save sssd_tiny
"""
