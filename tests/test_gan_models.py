"""GAN baselines: generator/discriminator shapes and stacks at the paper's d = 50, conditioning, phase shuffle, counts."""

import math

import pytest
import torch
import torch.nn.functional as F

from pulse2pulse.config import GANConfig, get_config
from pulse2pulse.models import (DISC_STRIDES, DISC_WIDTHS, PhaseShuffle, Pulse2PulseGenerator, UP_FACTORS,
                                WaveGANDiscriminator, WaveGANStarGenerator, build_discriminator, build_generator,
                                count_parameters, disc_lengths, parameter_report)

STACK = [2, 10, 50, 250, 500, 2500, 5000]


def _labels(rows, k=9):
    y = torch.zeros(len(rows), k)
    for i, cols in enumerate(rows):
        y[i, list(cols)] = 1.0
    return y


@pytest.mark.parametrize("model", ["wavegan_star", "pulse2pulse"])
@pytest.mark.parametrize("batch", [1, 2])
def test_paper_generators_emit_exactly_8_by_5000_in_unit_range(model, batch):
    torch.manual_seed(0)
    g = build_generator(get_config("paper", model=model)).eval()
    y = _labels([(0,), (1, 4)][:batch])
    with torch.no_grad():
        x = g.sample(y)
    assert x.shape == (batch, 8, 5000)
    assert x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def _record_lengths(modules):
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append((inp[0].shape, out.shape))) for m in modules]
    return seen, hooks


def test_wavegan_star_stack_lengths_and_widths_at_d50():
    g = WaveGANStarGenerator(get_config("paper", model="wavegan_star"))
    seen, hooks = _record_lengths(list(g.blocks))
    with torch.no_grad():
        g.sample(_labels([(2,)]))
    for h in hooks:
        h.remove()
    lengths = [seen[0][0][-1]] + [out[-1] for _, out in seen]
    widths = [seen[0][0][1]] + [out[1] for _, out in seen]
    assert lengths == STACK
    d = 50
    assert widths == [5 * d, 5 * d, 3 * d, d, d // 2, d // 5, 8]
    assert math.prod(UP_FACTORS) * 2 == 5000


def test_pulse2pulse_unet_lengths_at_d50():
    g = Pulse2PulseGenerator(get_config("paper", model="pulse2pulse"))
    down, h1 = _record_lengths(list(g.down))
    up, h2 = _record_lengths(list(g.up))
    with torch.no_grad():
        g.sample(_labels([(0, 8)]))
    for h in h1 + h2:
        h.remove()
    assert [down[0][0][-1]] + [o[-1] for _, o in down] == STACK[::-1]
    assert [up[0][0][-1]] + [o[-1] for _, o in up] == STACK
    d = 50
    assert [o[1] for _, o in down] == [d // 5, d // 2, d, 3 * d, 5 * d, 5 * d]
    # Skip concatenations double the input width of the four middle up-sampling blocks.
    assert [i[1] for i, _ in up] == [5 * d, 10 * d, 6 * d, 2 * d, 2 * (d // 2), d // 5]


def _conv_params(cin, cout, k=25):
    return cin * cout * k + cout


def test_parameter_counts_at_d50_match_the_layer_formulas(capsys):
    d, c, k, z = 50, 8, 9, 100
    report = parameter_report(get_config("paper"))
    w = [5 * d, 5 * d, 3 * d, d, d // 2, d // 5, c]
    wavegan = k * z + z * 10 * d + 10 * d + sum(_conv_params(w[i], w[i + 1]) for i in range(6))
    enc = [c, d // 5, d // 2, d, 3 * d, 5 * d, 5 * d]
    dec_in = [5 * d, 10 * d, 6 * d, 2 * d, 2 * (d // 2), d // 5]
    dec_out = [5 * d, 3 * d, d, d // 2, d // 5, c]
    p2p = (k * c * 5000 + sum(_conv_params(enc[i], enc[i + 1]) for i in range(6))
           + sum(_conv_params(a, b) for a, b in zip(dec_in, dec_out)))
    dw = [c] + [m * d for m in DISC_WIDTHS]
    disc = sum(_conv_params(dw[i], dw[i + 1]) for i in range(7)) + 100 * d * 5 + 1
    assert report["wavegan_star"] == wavegan
    assert report["pulse2pulse"] == p2p
    assert report["discriminator (none)"] == disc
    assert report["discriminator (projection)"] == disc + k * 100 * d
    with capsys.disabled():
        print("\nparameters at d=50:", {n: f"{v:,}" for n, v in report.items()})


def test_discriminator_feature_length_at_d50_and_accepts_generator_output():
    assert disc_lengths(5000) == [2499, 1249, 624, 311, 78, 19, 5]
    assert len(DISC_STRIDES) == 7
    with torch.device("meta"):
        d = WaveGANDiscriminator(get_config("paper"))
    assert d.fc.in_features == 100 * 50 * 5 == 25000
    torch.manual_seed(0)
    for model in ("wavegan_star", "pulse2pulse"):
        cfg = get_config("tiny", model=model)
        g, disc = build_generator(cfg), build_discriminator(cfg)
        for b in (1, 3):
            x = g.sample(_labels([(0,)] * b))
            assert x.shape == (b, 8, 5000)
            assert disc(x).shape == (b,)


@pytest.mark.parametrize("model", ["wavegan_star", "pulse2pulse"])
def test_multilabel_conditioning_sums_per_class_embeddings(model):
    torch.manual_seed(1)
    g = build_generator(get_config("tiny", model=model)).eval()
    y_ab, y_a = _labels([(1, 5)]), _labels([(1,)])
    emb = g.class_embedding
    assert torch.allclose(g.condition(y_ab)[0], emb[1] + emb[5], atol=1e-6)
    z = g.noise(1)
    with torch.no_grad():
        # Adding class 5's embedding to the noise must equal conditioning on {1, 5}.
        a = g(z, y_ab)
        b = g(z + emb[5].unsqueeze(0), y_a)
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("model", ["wavegan_star", "pulse2pulse"])
def test_different_labels_same_noise_give_different_signals(model):
    torch.manual_seed(2)
    g = build_generator(get_config("tiny", model=model)).eval()
    z = g.noise(1)
    with torch.no_grad():
        outs = [g(z, _labels([(c,)])) for c in range(3)]
        again = g(z, _labels([(0,)]))
    assert torch.equal(outs[0], again)
    assert (outs[0] - outs[1]).abs().max() > 1e-4
    assert (outs[1] - outs[2]).abs().max() > 1e-4


def _reference_shift(x, k):
    """WaveGAN's phase shuffle for one shift: drop k samples at one end, reflect-pad the other."""
    if k > 0:
        return F.pad(x[..., :-k], (k, 0), mode="reflect")
    if k < 0:
        return F.pad(x[..., -k:], (0, -k), mode="reflect")
    return x


def test_phase_shuffle_matches_reflection_shift_and_stays_within_n():
    torch.manual_seed(3)
    n = 2
    ps = PhaseShuffle(n).train()
    x = torch.randn(16, 3, 11)
    for k in range(-n, n + 1):
        out = ps(x[:1], shifts=torch.tensor([k]))
        assert torch.equal(out, _reference_shift(x[:1], k))
    out = ps(x)
    found = set()
    for i in range(x.shape[0]):
        matches = [k for k in range(-n, n + 1) if torch.equal(out[i:i + 1], _reference_shift(x[i:i + 1], k))]
        assert matches, f"example {i} is not a shift by at most {n}"
        found.update(matches)
    assert len(found) > 1  # the shifts are random per example
    assert torch.equal(ps.eval()(x), x)
    assert torch.equal(PhaseShuffle(0).train()(x), x)


def test_projection_discriminator_output_depends_on_the_label():
    torch.manual_seed(4)
    x = torch.rand(2, 8, 5000)
    d = build_discriminator(get_config("tiny", cond_discriminator="projection")).eval()
    s_a = d(x, _labels([(0,), (0,)]))
    s_b = d(x, _labels([(3,), (3,)]))
    assert (s_a - s_b).abs().min() > 1e-6
    with pytest.raises(ValueError, match="needs the labels"):
        d(x)
    plain = build_discriminator(get_config("tiny")).eval()
    assert plain.class_embedding is None
    assert torch.equal(plain(x, _labels([(0,), (0,)])), plain(x, _labels([(3,), (3,)])))


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="length"):
        GANConfig(length=4096)
    with pytest.raises(ValueError, match="model_size"):
        GANConfig(model_size=4)
    with pytest.raises(ValueError, match="cond_discriminator"):
        get_config("tiny", cond_discriminator="acgan")
    with pytest.raises(ValueError, match="unknown GANConfig"):
        GANConfig.from_dict({"modle": "x"})
    cfg = get_config("small", model="pulse2pulse")
    assert GANConfig.from_dict(cfg.to_dict()) == cfg
    assert count_parameters(build_generator(cfg)) > 0
