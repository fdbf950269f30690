"""The shared epoch loop (nvae_ecg.loop): limits, resume position, periodic saves, NaN and time-budget stops."""

import math

import torch
from torch.utils.data import DataLoader, TensorDataset

from nvae_ecg.loop import Accumulate, LoopLimits, LoopState, run_epochs
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


def test_a_term_from_some_steps_is_averaged_over_those_and_checked_when_named():
    def step_with_sparse_term(nan_at=None):
        calls = {"n": 0}

        def train_step(batch):
            calls["n"] += 1
            produced = calls["n"] % 2 == 0  # every second step, as a generator update every n_critic steps
            sparse = math.nan if calls["n"] == nan_at else 10.0 * calls["n"]
            counts = torch.tensor([1.0, 1.0 if produced else 0.0])
            return torch.tensor([float(calls["n"]), sparse if produced else math.nan]), counts
        return train_step

    sampler = ResumableSampler(N, BATCH, seed=3)
    loader = DataLoader(TensorDataset(torch.arange(N)), batch_size=BATCH, sampler=sampler)
    summaries = []
    stop, bad = run_epochs(loader, sampler, step_with_sparse_term(), ("loss", "sparse"), LoopState(0, 0, 0),
                           LoopLimits(5, log_every=1, max_epochs=1), TrainClock(), DistInfo(), torch.device("cpu"),
                           EmptyWriter(), on_epoch=summaries.append, checked=("loss", "sparse"))
    assert (stop, bad) == ("epochs", False) and summaries[0].stop == "epochs"
    assert summaries[0].means == {"loss": 3.0, "sparse": 30.0}  # steps 2 and 4 produced it: (20 + 40) / 2
    stop, bad = run_epochs(loader, sampler, step_with_sparse_term(nan_at=4), ("loss", "sparse"), LoopState(0, 0, 0),
                           LoopLimits(5, log_every=1, max_steps=20), TrainClock(), DistInfo(), torch.device("cpu"),
                           EmptyWriter(), checked=("loss", "sparse"))
    assert (stop, bad) == (None, True)  # a NaN in a checked term other than the first
    one = LoopState(0, 0, 0)
    run_epochs(loader, sampler, lambda b: (torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0])), ("loss", "sparse"),
               one, LoopLimits(5, log_every=1, max_steps=1), TrainClock(), DistInfo(), torch.device("cpu"),
               EmptyWriter(), on_epoch=summaries.append)
    assert math.isnan(summaries[-1].means["sparse"]) and summaries[-1].stop == "max_steps"  # no step produced it


def test_accumulate_groups_batches_and_a_resume_skips_whole_groups():
    sampler = ResumableSampler(N + 2, BATCH, seed=3)  # 6 batches: 2 groups of 2, a trailing partial group unread
    loader = DataLoader(TensorDataset(torch.arange(N + 2)), batch_size=BATCH, sampler=sampler)
    groups = Accumulate(loader, sampler, 2)
    assert groups.batches_per_epoch() == 3
    sampler = ResumableSampler(N, BATCH, seed=3)  # 5 batches: 2 groups of 2, the last batch unread
    loader = DataLoader(TensorDataset(torch.arange(N)), batch_size=BATCH, sampler=sampler)
    groups = Accumulate(loader, sampler, 2)
    sampler.set_epoch(0)
    plain = [b[0].tolist() for b in loader]

    def run(state, max_steps):
        seen = []

        def train_step(group):
            seen.append([b[0].tolist() for b in group])
            return torch.tensor([1.0])
        run_epochs(groups, groups, train_step, ("loss",), state, LoopLimits(2, log_every=1, max_steps=max_steps),
                   TrainClock(), DistInfo(), torch.device("cpu"), EmptyWriter())
        return seen

    straight = run(LoopState(0, 0, 0), 2)
    assert straight == [plain[0:2], plain[2:4]]
    cut = LoopState(0, 0, 0)
    assert run(cut, 1) == straight[:1] and (cut.epoch, cut.batch_in_epoch) == (0, 1)
    assert run(cut, 2) == straight[1:]  # the sampler skipped 1 group = 2 batches
