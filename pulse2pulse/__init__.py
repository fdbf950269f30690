"""Conditional GAN baselines of the paper: WaveGAN* and Pulse2Pulse (Thambawita et al. 2021), trained with WGAN-GP.

``pulse2pulse.models`` holds the generators and the (optionally projection-conditioned)
WaveGAN discriminator, ``pulse2pulse.wgan`` the WGAN-GP objectives,
``pulse2pulse.train`` the trainer and ``pulse2pulse.generate`` the sampler, which
writes the generated-sample format of ``nvae_ecg.samples``. See pulse2pulse/README.md.

Example::

    python -m pulse2pulse.train --model wavegan_star --data_dir prepared --config small --epochs 2
"""
