"""XResNet1d101 of the PTB-XL benchmark: parameter counts, forward shape and the fine-tuning head swap."""

import pytest
import torch

xr = pytest.importorskip("train_test.xresnet1d", reason="fastai is needed for the benchmark classifier")


def test_xresnet1d101_parameter_counts_and_forward():
    torch.manual_seed(0)
    one = xr.xresnet1d101(12, 1).eval()
    eight = xr.xresnet1d101(12, 8)
    # Strodthoff et al. 2021 XResNet1d101 (width 64 in every stage): exact numbers from the issue.
    assert xr.count_parameters(one) == 1_806_209
    assert xr.count_parameters(eight) == 1_809_800
    with torch.no_grad():
        y = one(torch.randn(2, 12, 5000))
    assert y.shape == (2, 1) and torch.isfinite(y).all()
    # Structure: 3 stem ConvLayers, max-pool, 4 stages of 3/4/23/3 blocks, head ending in Linear(512, n).
    assert [len(one[i]) for i in range(4, 8)] == [3, 4, 23, 3]
    assert isinstance(one[3], torch.nn.MaxPool1d)
    assert one[-1][-1].in_features == 512 and one.n_out == 1


def test_tiny_architecture_runs_and_is_small():
    m = xr.build_model("tiny", 12, 3)
    assert xr.count_parameters(m) < 5000
    assert m(torch.randn(2, 12, 500)).shape == (2, 3)
    with pytest.raises(ValueError, match="unknown architecture"):
        xr.build_model("resnet9000")


def test_head_swap_keeps_backbone_bit_for_bit():
    torch.manual_seed(1)
    model = xr.build_model("tiny", 12, 8)
    # Move weights and BatchNorm statistics away from their initial values first.
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):
        loss = model(torch.randn(4, 12, 400)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head = xr.head_parameter_names(model)
    assert head == {f"{len(model) - 1}.{len(model[-1]) - 1}.weight", f"{len(model) - 1}.{len(model[-1]) - 1}.bias"}
    xr.replace_head(model, 7)
    after = model.state_dict()
    assert set(after) == set(before)
    for k in before:
        if k in head:
            continue
        assert torch.equal(before[k], after[k]), f"backbone tensor {k} changed"
    assert model.n_out == 7 and after[sorted(head)[1]].shape == (7, before[sorted(head)[1]].shape[1])
    assert model(torch.randn(2, 12, 400)).shape == (2, 7)
