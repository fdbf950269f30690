"""SSSD-ECG denoiser and S4 layer: the published parameter count, frozen buffers, zero initial prediction,
additive label embedding, the S4 kernel against the discretised recurrence, HiPPO-LegS, kernel caching."""

import numpy as np
import pytest
import torch

from nvae_ecg.run import count_parameters
from sssd_ecg import model as model_mod
from sssd_ecg.config import get_config
from sssd_ecg.model import build_model
from sssd_ecg.s4 import S4Kernel, S4Layer, bilinear, dense_nplr, full_modes, hippo_legs_nplr, length_corrected


def test_paper_parameter_count_and_frozen_state_space(capsys):
    m = build_model(get_config("paper"), init_kernels=False)
    assert count_parameters(m) == 50_194_568
    # The authors' 71 PTB-XL statements: 62 more 128-d class vectors, as published (50,202,504).
    assert count_parameters(build_model(get_config("tiny", num_classes=71), init_kernels=False)) \
        - count_parameters(build_model(get_config("tiny"), init_kernels=False)) == 62 * 8
    names = {n for n, _ in m.named_buffers()}
    for part in ("w", "p", "b", "log_dt"):
        assert f"blocks.0.s4_1.kernel.{part}" in names
    trainable = {n.rsplit(".", 1)[-1] for n, p in m.blocks[0].s4_1.named_parameters()}
    assert trainable == {"C", "D", "weight", "bias"}  # C, D, output Linear, LayerNorm
    assert m.blocks[0].s4_1.kernel.C.shape == (2, 512, 32, 2)  # bidirectional heads, 32 complex modes
    assert model_mod.main(model_mod.parse_args(["--config", "paper"])) == 0
    assert "parameters: 50194568" in capsys.readouterr().out


def test_initial_prediction_is_zero_and_label_embedding_is_additive():
    torch.manual_seed(0)
    m = build_model(get_config("tiny", length=64))
    x, t = torch.randn(3, 8, 64), torch.tensor([0, 17, 199])
    y = torch.tensor([[1, 0, 0, 0, 0, 0, 0, 0, 1], [0, 1, 1, 0, 0, 0, 0, 0, 0], [0] * 9], dtype=torch.float32)
    assert torch.equal(m(x, y, t), torch.zeros(3, 8, 64))
    a, b = torch.eye(9)[[0, 3]], torch.eye(9)[[5, 8]]
    torch.testing.assert_close(m.label_embedding(a + b), m.label_embedding(a) + m.label_embedding(b))
    assert torch.equal(m.label_embedding(torch.zeros(1, 9)), torch.zeros(1, 8))


def test_hippo_legs_nplr_is_unitarily_equivalent():
    a, b, w, p, bt, vh = hippo_legs_nplr(16)
    v = np.concatenate([vh, vh.conj()], axis=1)
    np.testing.assert_allclose(v.conj().T @ v, np.eye(16), atol=1e-12)
    full = dense_nplr(torch.as_tensor(w), torch.as_tensor(p)).numpy()
    np.testing.assert_allclose(v @ full @ v.conj().T, a, atol=1e-10)
    np.testing.assert_allclose(v @ np.concatenate([bt, bt.conj()]), b, atol=1e-12)
    np.testing.assert_allclose(w.real, -0.5)


def _recurrence_kernel(k: S4Kernel) -> torch.Tensor:
    """K_j = C A_bar^j B_bar, j < L, by stepping the discretised state space, with C = C~ (I - A_bar^L)^-1."""
    w, p, b = (torch.view_as_complex(z) for z in (k.w, k.p, k.b))
    a_bar, b_bar = bilinear(dense_nplr(w, p), full_modes(b), k.log_dt.exp())
    n = a_bar.shape[-1]
    c_tilde = full_modes(torch.view_as_complex(k.C))
    c = torch.linalg.solve((torch.eye(n, dtype=a_bar.dtype) - torch.linalg.matrix_power(a_bar, k.l_max)).mT,
                           c_tilde.unsqueeze(-1)).squeeze(-1)
    out, state = [], b_bar  # state after an impulse: A_bar^j B_bar
    for _ in range(k.l_max):
        out.append((c * state).sum(-1))
        state = (a_bar @ state.unsqueeze(-1)).squeeze(-1)
    return torch.stack(out, -1)


@pytest.mark.parametrize("l_max", [64, 63])
def test_s4_kernel_is_the_impulse_response_of_the_recurrence(l_max):
    torch.manual_seed(1)
    k = S4Kernel(4, d_state=8, l_max=l_max, channels=2, dt_min=1e-2, dt_max=0.5).double()
    ref = _recurrence_kernel(k)
    assert ref.imag.abs().max() < 1e-10  # conjugate pairs: the impulse response is real
    torch.testing.assert_close(k(), ref.real, rtol=0, atol=1e-10)


def test_length_correction_matches_the_dense_modal_product():
    torch.manual_seed(2)
    c = torch.randn(2, 3, 4, dtype=torch.complex128)
    dt = torch.tensor([1e-3, 1e-2, 1e-1], dtype=torch.float64)
    _, _, w, p, b, _ = hippo_legs_nplr(8)
    a_bar, _ = bilinear(dense_nplr(torch.as_tensor(w), torch.as_tensor(p)).expand(3, 8, 8),
                        full_modes(torch.as_tensor(b)).expand(3, 8), dt)
    ref = (full_modes(c).unsqueeze(-2) @ (torch.eye(8, dtype=torch.complex128)
                                          - torch.linalg.matrix_power(a_bar, 100))).squeeze(-2)[..., :4]
    torch.testing.assert_close(length_corrected(c, dt, 100), ref, rtol=0, atol=1e-12)


def test_bidirectional_layer_sees_past_and_future_and_gradients_reach_c():
    torch.manual_seed(3)
    layer = S4Layer(4, l_max=32, d_state=8)
    x = torch.randn(1, 4, 32, requires_grad=True)
    layer(x)[0, 0, 16].backward()  # one feature: the LayerNorm output summed over features is constant
    g = x.grad[0].abs().sum(0)
    assert g[:16].sum() > 0 and g[17:].sum() > 0
    x2 = torch.randn(2, 4, 32)
    layer.zero_grad()
    layer(x2).square().mean().backward()
    assert layer.kernel.C.grad.abs().sum() > 0 and layer.kernel.log_dt.grad is None
    with pytest.raises(ValueError, match="longer than the S4 kernel"):
        layer(torch.randn(1, 4, 33))


def test_cached_kernels_give_the_same_output():
    torch.manual_seed(4)
    m = build_model(get_config("tiny", length=48))
    torch.nn.init.normal_(m.zero_conv.weight)  # a non-zero output, so that the comparison means something
    x, y, t = torch.randn(2, 8, 48), torch.eye(9)[[1, 4]], torch.tensor([3, 150])
    with torch.no_grad():
        plain = m(x, y, t)
        with m.cached_kernels():
            assert all(layer._cached is not None for layer in m.modules() if isinstance(layer, S4Layer))
            cached = m(x, y, t)
    assert all(layer._cached is None for layer in m.modules() if isinstance(layer, S4Layer))
    assert torch.equal(plain, cached)
