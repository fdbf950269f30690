"""The epoch loop the trainers share: resumable epochs, periodic loss logging, NaN and time-budget checks on every
rank, step and epoch limits, and the hooks a trainer fills in (the optimiser step, quality checks, epoch summaries).

A trainer builds its data, model and optimiser with :mod:`nvae_ecg.run`, then hands :func:`run_epochs` a
``train_step(batch) -> tensor of loss terms`` (the first term is the one checked for non-finite values, unless
``checked`` names others) and gets back why it stopped. The loop owns what every trainer repeated:
``sampler.set_epoch`` with the batches already done on a resume skipped, the progress bar, device-side loss sums
read every ``log_every`` steps only (one host sync), ``any_rank`` agreement on NaN and the wall-clock budget,
``max_steps`` / ``max_epochs``, periodic in-epoch checkpoints and the epoch means reduced over ranks. A term that
only some steps produce (a GAN's generator loss) is averaged over those steps; :class:`Accumulate` makes one step
of several batches (gradient accumulation). ``sssd_ecg.train``, ``cvae_ecg.train``, ``nvae_ecg.train`` and
``pulse2pulse.train`` run on it.

Example::

    python -c "from nvae_ecg.loop import LoopLimits; print(LoopLimits(steps_per_epoch=10, log_every=5))"
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence, Union

import torch
import torch.distributed as dist
from tqdm import tqdm

from nvae_ecg.run import DistInfo, TrainClock, any_rank


#: What a train step returns: the loss terms, or (terms, which of them the step produced).
StepTerms = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]


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
    stop: Optional[str] = None  # why the loop ends after this epoch (a limit or the budget), None: it goes on

    @property
    def epoch_done(self) -> int:
        """Epochs completed after this one (the checkpoint's ``epoch``)."""
        return self.epoch + 1 if self.complete else self.epoch


class Accumulate:
    """A loader whose batches come in groups of ``accum``, one group per optimiser step (gradient accumulation).

    Pass it as both the loader and the sampler of :func:`run_epochs`: the loop then counts steps, and the skip
    of a resume reaches the sampler in batches (``skip * accum``). A trailing partial group is left unread.
    """

    def __init__(self, loader: Iterable, sampler, accum: int) -> None:
        self.loader, self.sampler, self.accum = loader, sampler, int(accum)
        self.steps = sampler.batches_per_epoch() // self.accum
        self.skip = 0

    def batches_per_epoch(self) -> int:
        """Groups (optimiser steps) of one full epoch."""
        return self.steps

    def set_epoch(self, epoch: int, skip_steps: int = 0) -> None:
        self.skip = int(skip_steps)
        self.sampler.set_epoch(epoch, self.skip * self.accum)

    def __len__(self) -> int:
        return self.steps - self.skip

    def __iter__(self):
        batches = iter(self.loader)
        for _ in range(len(self)):
            yield [next(batches) for _ in range(self.accum)]


def stop_at_start(state: LoopState, limits: LoopLimits, clock: TrainClock) -> Optional[str]:
    """Why a (resumed) run must not train at all, or None."""
    if limits.max_steps and state.step >= limits.max_steps:
        return "max_steps"
    if limits.max_epochs and state.epoch >= limits.max_epochs:
        return "epochs"
    if clock.over_at_start():
        return "time budget"
    return None


def run_epochs(loader: Iterable, sampler, train_step: Callable[[object], StepTerms], keys: Sequence[str],
               state: LoopState, limits: LoopLimits, clock: TrainClock, info: DistInfo, device: torch.device,
               writer, *, on_step: Callable[[int], None] | None = None,
               on_epoch: Callable[[EpochSummary], None] | None = None,
               save_step: Callable[[LoopState], None] | None = None,
               checked: Sequence[str] | None = None) -> tuple[Optional[str], bool]:
    """Train epoch after epoch from ``state`` (updated in place); returns (stop reason or None, non-finite loss).

    ``train_step`` runs one optimiser step on a batch and returns the detached loss terms named by ``keys`` (a
    tensor of ``len(keys)`` values on ``device``), or ``(terms, counts)`` when some terms come from only some steps:
    ``counts`` (0 or 1 per term) says which ones this step produced; each term is averaged over the steps that
    produced it (NaN when none did, and then not written to TensorBoard). ``on_step(step)`` runs after every step
    (quality checks, figures), ``on_epoch(summary)`` after every epoch (log line, validation, the epoch-end
    checkpoint), ``save_step(state)`` every ``limits.save_every_steps`` steps. The terms named by ``checked``
    (default: the first) are checked for non-finite values; on one the loop returns at once with ``True``; the
    caller exits without saving, so the last good checkpoint stays.
    """
    stop = stop_at_start(state, limits, clock)
    first_epoch, skip_first = state.epoch, state.batch_in_epoch
    check = torch.tensor([k in (checked or keys[:1]) for k in keys], device=device)
    every_step = torch.ones(len(keys), device=device, dtype=torch.float64)
    while not stop:
        skip = skip_first if state.epoch == first_epoch else 0
        sampler.set_epoch(state.epoch, skip)
        # Rows: the term sums, then how many steps produced each term.
        sums = torch.zeros(2, len(keys), device=device, dtype=torch.float64)
        window = torch.zeros(2, len(keys), device=device, dtype=torch.float64)
        bad = torch.zeros((), device=device, dtype=torch.bool)
        nb, t0 = 0, time.time()
        state.batch_in_epoch = skip
        of = f"/{limits.max_epochs}" if limits.max_epochs else ""
        bar = tqdm(loader, desc=f"epoch {state.epoch + 1}{of}", disable=not info.is_main, leave=False,
                   total=limits.steps_per_epoch, initial=skip)
        for batch in bar:
            out = train_step(batch)
            if isinstance(out, tuple):
                terms, counts = out[0].double(), out[1].double()
                terms = torch.where(counts > 0, terms, 0.0)  # what a step did not produce may be anything
            else:
                terms, counts = out.double(), every_step
            state.step += 1
            state.batch_in_epoch += 1
            nb += 1
            step_sums = torch.stack([terms, counts])
            sums += step_sums
            window += step_sums
            bad |= (~torch.isfinite(terms) & check).any()
            if on_step is not None:
                on_step(state.step)
            last_step = bool(limits.max_steps) and state.step >= limits.max_steps
            if state.step % limits.log_every == 0 or last_step:
                nonfinite, over = any_rank([bad, clock.over()], info.distributed, device)
                if nonfinite:
                    return stop, True
                if info.is_main:
                    n = window[1].tolist()
                    avg = (window[0] / window[1]).tolist()
                    bar.set_postfix({k: f"{v:.4g}" for k, v in zip(keys, avg)})
                    for k, v, produced in zip(keys, avg, n):
                        if produced:
                            writer.add_scalar(f"train/{k}_avg", v, state.step)
                    writer.add_scalar("train/hours", clock.seconds() / 3600, state.step)
                window.zero_()
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
        if info.distributed:
            dist.all_reduce(sums)
        summary = EpochSummary(state.epoch, dict(zip(keys, (sums[0] / sums[1]).tolist())), nb,
                               state.batch_in_epoch, state.batch_in_epoch >= limits.steps_per_epoch,
                               time.time() - t0)
        if limits.max_epochs and summary.epoch_done >= limits.max_epochs:
            stop = stop or "epochs"
        summary.stop = stop
        if on_epoch is not None:
            on_epoch(summary)
        state.epoch = summary.epoch_done
        state.batch_in_epoch = 0 if summary.complete else state.batch_in_epoch
        if not summary.complete:
            break  # stopped inside the epoch (a limit): nothing more to run
    return stop, False
