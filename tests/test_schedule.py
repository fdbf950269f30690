"""Schedules counted in steps (LR warm-up, KL warm-up) and the optimiser choice of nvae_ecg.train."""

from __future__ import annotations

import math

import pytest
import torch

from nvae_ecg import train as T

SCHED = dict(learning_rate=1e-2, learning_rate_min=1e-4, epochs=10, percent_epochs=20, steps_per_epoch=100)


def test_lr_warmup_from_percent_epochs_matches_nvae():
    # floor(10 * 20 / 100) = 2 warm-up epochs = 200 steps, then cosine over T_max = 10 - 2 - 1 epochs.
    assert T.lr_at(0, 0, **SCHED) == 0.0
    assert T.lr_at(100, 1, **SCHED) == pytest.approx(5e-3)
    assert T.lr_at(200, 2, **SCHED) == pytest.approx(1e-2)
    assert T.lr_at(950, 9, **SCHED) == pytest.approx(1e-4)


def test_lr_warmup_in_steps_is_independent_of_the_epochs():
    # A short run: 10 epochs of 100 steps, warm-up over 50 steps whatever --percent_epochs says.
    assert T.lr_at(25, 0, **SCHED, warmup_steps=50) == pytest.approx(5e-3)
    assert T.lr_at(50, 0, **SCHED, warmup_steps=50) == pytest.approx(1e-2)  # cosine from epoch 0, at its peak
    half = 1e-4 + (1e-2 - 1e-4) * (1 + math.cos(math.pi * 4.5 / 9)) / 2
    assert T.lr_at(450, 4.5, **SCHED, warmup_steps=50) == pytest.approx(half)
    # 250 warm-up steps end inside epoch 2: the cosine starts there.
    assert T.lr_at(260, 2, **SCHED, warmup_steps=250) == pytest.approx(1e-2)


def test_kl_schedule_steps_override_portions():
    assert T.kl_schedule(1000, anneal_portion=0.3, const_portion=1e-4) == (300.0, pytest.approx(0.1))
    assert T.kl_schedule(1000, anneal_portion=0.3, const_portion=1e-4, anneal_steps=5000, const_steps=200) == \
        (5000.0, 200.0)


def test_optimizer_choice():
    params = [torch.nn.Parameter(torch.zeros(3))]
    adamax = T.build_optimizer(params, "adamax", 1e-3, 3e-4)
    assert isinstance(adamax, torch.optim.Adamax) and adamax.defaults["eps"] == 1e-3  # NVAE's eps
    adam = T.build_optimizer(params, "adam", 3e-3, 0.0)
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["lr"] == 3e-3
    with pytest.raises(ValueError, match="unknown optimizer"):
        T.build_optimizer(params, "sgd", 1e-3, 0.0)


def test_step_flags_default_to_the_paper_schedule_and_reject_negatives(capsys):
    args = T.parse_args(["--data_dir", "x"])
    assert (args.optimizer, args.warmup_steps, args.kl_anneal_steps, args.kl_const_steps) == ("adamax", 0, 0, 0)
    with pytest.raises(SystemExit):
        T.parse_args(["--data_dir", "x", "--kl_anneal_steps", "-1"])
    assert "--kl_anneal_steps must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        T.parse_args(["--data_dir", "x", "--optimizer", "sgd"])
