"""The epoch loop the trainers share: resumable epochs, periodic loss logging, NaN and time-budget checks on every
rank, step and epoch limits, and the hooks a trainer fills in (the optimiser step, quality checks, epoch summaries).

A trainer builds its data, model and optimiser with :mod:`nvae_ecg.run`, then hands :func:`run_epochs` a
``train_step(batch) -> tensor of loss terms`` (the first term is the one checked for non-finite values) and gets
back why it stopped. The loop owns what every trainer repeated: ``sampler.set_epoch`` with the batches already done
on a resume skipped, the progress bar, device-side loss sums read every ``log_every`` steps only (one host sync),
``any_rank`` agreement on NaN and the wall-clock budget, ``max_steps`` / ``max_epochs``, periodic in-epoch
checkpoints and the epoch means reduced over ranks. ``sssd_ecg.train`` and ``cvae_ecg.train`` run on it.

Example::

    python -c "from nvae_ecg.loop import LoopLimits; print(LoopLimits(steps_per_epoch=10, log_every=5))"
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

import torch
import torch.distributed as dist
from tqdm import tqdm

from nvae_ecg.run import DistInfo, TrainClock, any_rank


@dataclass
class LoopLimits:
    """When to log, save and stop."""

    steps_per_epoch: int
    log_every: int
    max_steps: int = 0          # 0: no limit
    max_epochs: int = 0         # 0: no limit
    save_every_steps: int = 0   # a periodic checkpoint inside epochs every k steps (0: only the epoch-end saves)


@dataclass
class LoopState:
    """Position of the run: epochs completed, batches done in the current epoch, optimiser steps in total."""

    epoch: int
    batch_in_epoch: int
    step: int


@dataclass
class EpochSummary:
    """What :func:`run_epochs` reports at the end of an epoch (or of its part before a stop)."""

    epoch: int                  # 0-based index of the epoch that ran
    means: dict                 # key -> mean over the epoch's batches and ranks
    batches: int                # batches this process ran in it (after a resume: without the skipped ones)
    batch_in_epoch: int         # position reached in the epoch
    complete: bool              # the epoch ran to its last batch
    seconds: float              # wall-clock time of the epoch

    @property
    def epoch_done(self) -> int:
        """Epochs completed after this one (the checkpoint's ``epoch``)."""
        return self.epoch + 1 if self.complete else self.epoch


def stop_at_start(state: LoopState, limits: LoopLimits, clock: TrainClock) -> Optional[str]:
    """Why a (resumed) run must not train at all, or None."""
    if limits.max_steps and state.step >= limits.max_steps:
        return "max_steps"
    if limits.max_epochs and state.epoch >= limits.max_epochs:
        return "epochs"
    if clock.over_at_start():
        return "time budget"
    return None


def run_epochs(loader: Iterable, sampler, train_step: Callable[[object], torch.Tensor], keys: Sequence[str],
               state: LoopState, limits: LoopLimits, clock: TrainClock, info: DistInfo, device: torch.device,
               writer, *, on_step: Callable[[int], None] | None = None,
               on_epoch: Callable[[EpochSummary], None] | None = None,
               save_step: Callable[[LoopState], None] | None = None) -> tuple[Optional[str], bool]:
    """Train epoch after epoch from ``state`` (updated in place); returns (stop reason or None, non-finite loss).

    ``train_step`` runs one optimiser step on a batch and returns the detached loss terms named by ``keys`` (a
    tensor of ``len(keys)`` values on ``device``); ``on_step(step)`` runs after every step (quality checks, figures),
    ``on_epoch(summary)`` after every epoch (log line, validation, the epoch-end checkpoint), ``save_step(state)``
    every ``limits.save_every_steps`` steps. On a non-finite loss the loop returns at once with ``True``; the
    caller exits without saving, so the last good checkpoint stays.
    """
    stop = stop_at_start(state, limits, clock)
    first_epoch, skip_first = state.epoch, state.batch_in_epoch
    while not stop:
        skip = skip_first if state.epoch == first_epoch else 0
        sampler.set_epoch(state.epoch, skip)
        sums = torch.zeros(len(keys), device=device, dtype=torch.float64)
        window = torch.zeros(len(keys), device=device, dtype=torch.float64)
        bad = torch.zeros((), device=device, dtype=torch.bool)
        nb, nw, t0 = 0, 0, time.time()
        state.batch_in_epoch = skip
        bar = tqdm(loader, desc=f"epoch {state.epoch + 1}", disable=not info.is_main, leave=False,
                   total=limits.steps_per_epoch, initial=skip)
        for batch in bar:
            terms = train_step(batch).double()
            state.step += 1
            state.batch_in_epoch += 1
            nb += 1
            nw += 1
            sums += terms
            window += terms
            bad |= ~torch.isfinite(terms[0])
            if on_step is not None:
                on_step(state.step)
            last_step = bool(limits.max_steps) and state.step >= limits.max_steps
            if state.step % limits.log_every == 0 or last_step:
                nonfinite, over = any_rank([bad, clock.over()], info.distributed, device)
                if nonfinite:
                    return stop, True
                if info.is_main:
                    avg = (window / max(nw, 1)).tolist()
                    bar.set_postfix({k: f"{v:.4g}" for k, v in zip(keys, avg)})
                    for k, v in zip(keys, avg):
                        writer.add_scalar(f"train/{k}_avg", v, state.step)
                    writer.add_scalar("train/hours", clock.seconds() / 3600, state.step)
                window.zero_()
                nw = 0
                if over:
                    stop = "time budget"
                if last_step:
                    stop = stop or "max_steps"
            if save_step is not None and limits.save_every_steps and state.step % limits.save_every_steps == 0 \
                    and not stop:
                if any_rank([bad], info.distributed, device)[0]:
                    return stop, True
                save_step(state)
            if stop:
                break
        bar.close()
        if nb == 0:
            break
        nonfinite, over = any_rank([bad, clock.over()], info.distributed, device)
        if nonfinite:
            return stop, True
        if over:
            stop = stop or "time budget"
        counts = torch.full((len(keys),), float(nb), device=device, dtype=torch.float64)
        if info.distributed:
            dist.all_reduce(sums)
            counts = counts * info.world_size
        summary = EpochSummary(state.epoch, dict(zip(keys, (sums / counts).tolist())), nb, state.batch_in_epoch,
                               state.batch_in_epoch >= limits.steps_per_epoch, time.time() - t0)
        if on_epoch is not None:
            on_epoch(summary)
        state.epoch = summary.epoch_done
        state.batch_in_epoch = 0 if summary.complete else state.batch_in_epoch
        if limits.max_epochs and state.epoch >= limits.max_epochs:
            stop = stop or "epochs"
        if not summary.complete:
            break  # stopped inside the epoch (a limit): nothing more to run
    return stop, False
