"""The shared epoch loop (nvae_ecg.loop): limits, resume position, periodic saves, NaN and time-budget stops."""

import math

import torch
from torch.utils.data import DataLoader, TensorDataset

from nvae_ecg.loop import LoopLimits, LoopState, run_epochs
from nvae_ecg.run import DistInfo, EmptyWriter, ResumableSampler, TrainClock

N, BATCH = 10, 2  # 5 batches per epoch


def _run(state, limits, losses=None, clock=None):
    """Run the loop over indices 0..N-1; returns (stop, nonfinite, seen index batches, epoch summaries, saves)."""
    sampler = ResumableSampler(N, BATCH, seed=3)
    loader = DataLoader(TensorDataset(torch.arange(N)), batch_size=BATCH, sampler=sampler)
    seen, summaries, saves = [], [], []

    def train_step(batch):
        seen.append(batch[0].tolist())
        value = losses(len(seen)) if losses else float(len(seen))
        return torch.tensor([value, 2.0 * value])

    stop, bad = run_epochs(loader, sampler, train_step, ("loss", "twice"), state, limits, clock or TrainClock(),
                           DistInfo(), torch.device("cpu"), EmptyWriter(), on_epoch=summaries.append,
                           save_step=lambda st: saves.append((st.epoch, st.batch_in_epoch, st.step)))
    return stop, bad, seen, summaries, saves


def test_max_steps_stops_inside_an_epoch_and_a_resume_sees_the_remaining_batches():
    straight = LoopState(0, 0, 0)
    stop, bad, seen_all, summaries, _ = _run(straight, LoopLimits(5, log_every=1, max_steps=8))
    assert (stop, bad) == ("max_steps", False)
    assert (straight.epoch, straight.batch_in_epoch, straight.step) == (1, 3, 8)
    assert [s.complete for s in summaries] == [True, False] and summaries[0].means == {"loss": 3.0, "twice": 6.0}
    killed = LoopState(0, 0, 0)
    _run(killed, LoopLimits(5, log_every=1, max_steps=3))
    assert (killed.epoch, killed.batch_in_epoch, killed.step) == (0, 3, 3)
    _, _, seen_rest, _, _ = _run(killed, LoopLimits(5, log_every=1, max_steps=8))
    assert seen_all[3:] == seen_rest and killed.step == 8  # the batches the straight run saw after step 3


def test_epoch_limit_periodic_saves_and_a_finished_run_does_not_train():
    state = LoopState(0, 0, 0)
    stop, _, seen, summaries, saves = _run(state, LoopLimits(5, log_every=2, max_epochs=2, save_every_steps=4))
    assert stop == "epochs" and len(seen) == 10 and (state.epoch, state.step) == (2, 10)
    assert saves == [(0, 4, 4), (1, 3, 8)] and [s.epoch_done for s in summaries] == [1, 2]
    stop, _, seen, _, _ = _run(state, LoopLimits(5, log_every=2, max_epochs=2))
    assert stop == "epochs" and seen == []


def test_a_nonfinite_loss_returns_at_the_next_check_without_an_epoch_summary():
    state = LoopState(0, 0, 0)
    stop, bad, seen, summaries, saves = _run(state, LoopLimits(5, log_every=3, save_every_steps=2),
                                             losses=lambda i: math.nan if i == 2 else 1.0)
    assert bad and stop is None and len(seen) == 2 and summaries == [] and saves == []  # the save at step 2 refused


def test_time_budget_stops_at_a_log_step_and_a_spent_budget_does_not_train():
    clock = TrainClock(prev_seconds=0.0, max_hours=1.0)
    clock.prev_seconds = 3600.0 - 1e-9  # over by the first check, not at the start
    clock.over_at_start = lambda: False
    state = LoopState(0, 0, 0)
    stop, _, seen, _, _ = _run(state, LoopLimits(5, log_every=2), clock=clock)
    assert stop == "time budget" and len(seen) == 2
    stop, _, seen, _, _ = _run(LoopState(0, 0, 0), LoopLimits(5, log_every=2), clock=TrainClock(3600.0, 1.0))
    assert stop == "time budget" and seen == []
