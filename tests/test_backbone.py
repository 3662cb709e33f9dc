"""lab.backbone: body and head shapes, dueling identity, LSTM resets, init, optimizers, specs."""

import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from lab.backbone import (
    MLP,
    CategoricalHead,
    DuelingQHead,
    GaussianHead,
    LSTMCore,
    MLPSpec,
    NatureCNNSpec,
    OptimizerSpec,
    QHead,
    ResidualSpec,
    ResidualTower,
    ValueHead,
    VGGSpec,
    build_body,
    build_optimizer,
    init_actor_critic,
    init_weights,
    parse_network_spec,
)

# ---- bodies ---------------------------------------------------------------------------------

BODY_CASES = [
    ({"type": "mlp", "hidden": [32, 16]}, (4,), 16),
    ({"type": "mlp", "hidden": [8]}, (3, 5), 8),
    ({"type": "mlp", "hidden": []}, (3, 5), 15),
    ({"type": "nature_cnn"}, (4, 84, 84), 512),
    ({"type": "nature_cnn", "features": 64}, (1, 36, 36), 64),
    ({"type": "vgg", "channels": [8, 16], "features": 32, "dropout": 0.5}, (1, 28, 28), 32),
    ({"type": "vgg", "channels": [4], "batch_norm": False, "features": 8}, (3, 5, 7), 8),
    ({"type": "residual", "channels": 8, "blocks": 2}, (3, 9, 9), 8 * 9 * 9),
    ({"type": "residual", "channels": 4, "blocks": 0}, (2, 5, 5), 4 * 5 * 5),
]


@pytest.mark.parametrize("raw, obs_shape, out_dim", BODY_CASES)
def test_body_output_shapes(raw, obs_shape, out_dim):
    body = build_body(raw, obs_shape)
    assert body.out_dim == out_dim
    body.eval()
    assert body(torch.rand(5, *obs_shape)).shape == (5, out_dim)
    assert body(torch.rand(2, 3, *obs_shape)).shape == (2, 3, out_dim)  # (T, B, ...)
    assert body(torch.rand(*obs_shape)).shape == (out_dim,)  # one unbatched observation


def test_build_body_takes_spec_models_and_dicts_alike():
    torch.manual_seed(0)
    a = build_body(MLPSpec(hidden=[256, 256]), (4,))
    torch.manual_seed(0)
    b = build_body({"type": "mlp", "hidden": [256, 256]}, [4])
    x = torch.randn(3, 4)
    assert torch.equal(a(x), b(x))
    assert isinstance(parse_network_spec({"type": "residual"}), ResidualSpec)


def test_image_bodies_scale_uint8_pixels_and_cast_bools():
    cnn = build_body(NatureCNNSpec(features=16), (2, 40, 40))
    pixels = torch.randint(0, 256, (3, 2, 40, 40), dtype=torch.uint8)
    assert torch.allclose(cnn(pixels), cnn(pixels.float() / 255.0))
    tower = build_body(ResidualSpec(channels=4, blocks=1), (2, 5, 5)).eval()
    planes = torch.rand(3, 2, 5, 5) > 0.5  # board planes are values: no /255
    assert torch.equal(tower(planes), tower(planes.float()))
    mlp = build_body(MLPSpec(hidden=[4]), (6,))
    ints = torch.randint(0, 3, (2, 6))
    assert torch.equal(mlp(ints), mlp(ints.float()))


def test_nature_cnn_is_the_atari_dqn_network():
    cnn = build_body({"type": "nature_cnn"}, (4, 84, 84))
    convs = [m for m in cnn.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (32, (8, 8), (4, 4)), (64, (4, 4), (2, 2)), (64, (3, 3), (1, 1))]
    linear = next(m for m in cnn.modules() if isinstance(m, nn.Linear))
    assert (linear.in_features, linear.out_features) == (64 * 7 * 7, 512)  # 84 -> 20 -> 9 -> 7
    n_params = sum(p.numel() for p in cnn.parameters())
    assert n_params == 1_684_128  # 8,224 + 32,832 + 36,928 (convs) + 1,606,144 (linear)


def test_vgg_blocks_batch_norm_pooling_dropout():
    vgg = build_body(VGGSpec(channels=[8, 16], convs_per_block=2, dropout=0.25), (1, 28, 28))
    kinds = [type(m) for m in vgg.convs]
    assert kinds.count(nn.Conv2d) == 4 and kinds.count(nn.BatchNorm2d) == 4
    assert kinds.count(nn.MaxPool2d) == 2
    assert next(m for m in vgg.modules() if isinstance(m, nn.Dropout)).p == 0.25
    assert vgg.head[1].in_features == 16 * 7 * 7  # 28 -> 14 -> 7
    x = torch.rand(4, 1, 28, 28)
    vgg.eval()
    assert torch.equal(vgg(x), vgg(x))  # eval: dropout off, batch norm uses running stats


def test_residual_tower_keeps_the_board_shape_and_skips():
    tower = ResidualTower((3, 9, 9), ResidualSpec(channels=8, blocks=2)).eval()
    assert tower.out_shape == (8, 9, 9)
    x = torch.rand(4, 3, 9, 9)
    assert tower.spatial(x).shape == (4, 8, 9, 9)
    assert torch.equal(tower(x), tower.spatial(x).flatten(1))
    assert torch.equal(tower(x).view(4, *tower.out_shape), tower.spatial(x))
    # with the second batch norm's scale and shift at 0 a block is relu(x + 0): the skip alone
    block = tower.blocks[0]
    nn.init.zeros_(block.conv2[1].weight)
    nn.init.zeros_(block.conv2[1].bias)
    h = torch.randn(4, 8, 9, 9)
    assert torch.equal(block(h), torch.relu(h))


@pytest.mark.parametrize("raw, obs_shape, needs", [
    ({"type": "nature_cnn"}, (4,), "(C, H, W) with H, W >= 36"),
    ({"type": "nature_cnn"}, (84, 84, 4), "channels-last"),
    ({"type": "nature_cnn"}, (4, 20, 20), "H, W >= 36"),
    ({"type": "vgg", "channels": [8, 8, 8]}, (1, 6, 6), "H, W >= 8"),
    ({"type": "vgg"}, (28, 28), "(C, H, W)"),
    ({"type": "residual"}, (81,), "(C, H, W)"),
])
def test_shape_mismatch_is_one_clear_line(raw, obs_shape, needs):
    with pytest.raises(ValueError) as info:
        build_body(raw, obs_shape)
    message = str(info.value)
    assert needs in message and raw["type"] in message and str(tuple(obs_shape)) in message
    assert "\n" not in message


# ---- heads ----------------------------------------------------------------------------------

def test_head_output_shapes():
    feats = torch.randn(5, 16)
    assert QHead(16, 3)(feats).shape == (5, 3)
    assert DuelingQHead(16, 3)(feats).shape == (5, 3)
    assert ValueHead(16)(feats).shape == (5,)
    cat = CategoricalHead(16, 4)
    dist = cat.distribution(cat(feats))
    assert dist.sample().shape == (5,) and dist.log_prob(torch.zeros(5)).shape == (5,)
    gauss = GaussianHead(16, 2, log_std_init=-1.0)
    dist = gauss.distribution(gauss(feats))
    assert dist.sample().shape == (5, 2)
    assert torch.allclose(dist.stddev, torch.full((5, 2), math.exp(-1.0)))


def test_dueling_head_removes_the_mean_advantage():
    head = DuelingQHead(2, 3)
    with torch.no_grad():
        head.value.weight.copy_(torch.tensor([[1.0, 0.0]]))  # V = f0 + 2
        head.value.bias.fill_(2.0)
        head.advantage.weight.zero_()
        head.advantage.weight[:, 1] = torch.tensor([1.0, 2.0, 6.0])  # A = f1 * [1, 2, 6]
        head.advantage.bias.zero_()
    q = head(torch.tensor([[1.0, 1.0], [0.0, 2.0]]))
    # row 0: V = 3, A = [1, 2, 6], mean 3 -> Q = 3 + [-2, -1, 3]
    # row 1: V = 2, A = [2, 4, 12], mean 6 -> Q = 2 + [-4, -2, 6]
    assert torch.allclose(q, torch.tensor([[1.0, 2.0, 6.0], [-2.0, 0.0, 8.0]]))
    assert torch.allclose(q.mean(dim=1), torch.tensor([3.0, 2.0]))  # mean_a Q = V


# ---- LSTM -----------------------------------------------------------------------------------

def _step_by_step(core, x, state, starts):
    """Reference: one step at a time, zeroing each env's state where its episode starts."""
    h, c = state
    outs = []
    for t in range(x.shape[0]):
        keep = (~starts[t]).float().view(1, -1, 1)
        out, (h, c) = core.lstm(x[t:t + 1], (h * keep, c * keep))
        outs.append(out[0])
    return torch.stack(outs), (h, c)


@pytest.mark.parametrize("reset_steps", [
    [],                                          # the fast path: one nn.LSTM call
    [(0, 1)],                                    # a reset on the first step only: still one call
    [(2, 0), (2, 2), (5, 1), (6, 3), (0, 3)],   # resets inside the sequence
])
def test_lstm_resets_exactly_at_episode_starts(reset_steps):
    torch.manual_seed(0)
    core = LSTMCore(5, 7)
    steps, batch = 8, 4
    x = torch.randn(steps, batch, 5)
    state = (torch.randn(1, batch, 7), torch.randn(1, batch, 7))
    starts = torch.zeros(steps, batch, dtype=torch.bool)
    for t, b in reset_steps:
        starts[t, b] = True
    out, (h, c) = core(x, state, starts)
    ref_out, (ref_h, ref_c) = _step_by_step(core, x, state, starts)
    assert out.shape == (steps, batch, 7) and h.shape == c.shape == (1, batch, 7)
    assert torch.allclose(out, ref_out, atol=1e-6)
    assert torch.allclose(h, ref_h, atol=1e-6) and torch.allclose(c, ref_c, atol=1e-6)
    # after a reset an env's outputs are those of a fresh zero state fed the rest of its inputs
    for t, b in reset_steps:
        fresh, _ = core(x[t:, b:b + 1])
        later = [t2 for t2, b2 in reset_steps if b2 == b and t2 > t]
        end = min(later, default=steps)
        assert torch.allclose(out[t:end, b], fresh[: end - t, 0], atol=1e-6)


def test_lstm_state_carries_across_calls_and_floats_work_as_starts():
    torch.manual_seed(1)
    core = LSTMCore(3, 4, num_layers=2)
    x = torch.randn(6, 2, 3)
    starts = torch.zeros(6, 2)
    starts[3, 0] = 1.0  # SB3 passes episode starts as 0/1 floats
    whole, state = core(x, None, starts)
    first, mid = core(x[:3], core.initial_state(2), starts[:3])
    second, state2 = core(x[3:], mid, starts[3:])
    assert torch.allclose(whole, torch.cat([first, second]), atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(state, state2, strict=True))
    one, _ = core(x[0], None, starts[0])  # a single step as (B, D)
    assert one.shape == (2, 4) and torch.allclose(one, whole[0], atol=1e-6)
    h, c = core.initial_state(5, "cpu")
    assert h.shape == c.shape == (2, 5, 4) and not h.any()


# ---- init -----------------------------------------------------------------------------------

def _linears(module):
    return [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def test_orthogonal_init_square_weights_are_orthogonal_and_biases_zero():
    net = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16), nn.Conv2d(3, 4, 3))
    init_weights(net, "orthogonal", gain=1.0)
    for layer in _linears(net):
        assert not layer.bias.any()
    for layer in _linears(net)[:2]:
        w = layer.weight
        assert torch.allclose(w @ w.T, torch.eye(16), atol=1e-5)
    conv = _linears(net)[2].weight.flatten(1)  # (4, 27): orthonormal rows
    assert torch.allclose(conv @ conv.T, torch.eye(4), atol=1e-5)
    init_weights(net, "orthogonal")  # default gain sqrt(2): W W^T = 2 I
    w = net[0].weight
    assert torch.allclose(w @ w.T, 2.0 * torch.eye(16), atol=1e-5)


def test_xavier_and_kaiming_scales():
    torch.manual_seed(0)
    layer = nn.Linear(400, 300)
    init_weights(layer, "xavier", gain=2.0)
    bound = 2.0 * math.sqrt(6.0 / (400 + 300))
    assert layer.weight.abs().max() <= bound and not layer.bias.any()
    assert layer.weight.std().item() == pytest.approx(bound / math.sqrt(3.0), rel=0.02)
    init_weights(layer, "kaiming")  # ReLU gain sqrt(2): std sqrt(2 / fan_in)
    assert layer.weight.std().item() == pytest.approx(math.sqrt(2.0 / 400), rel=0.02)
    conv = nn.Conv2d(16, 64, 3)
    init_weights(conv, "kaiming", gain=1.0)  # fan_in = 16 * 3 * 3
    assert conv.weight.std().item() == pytest.approx(1.0 / 12.0, rel=0.05)


def test_default_init_leaves_weights_and_unknown_scheme_is_refused():
    layer = nn.Linear(4, 4)
    before = layer.weight.clone(), layer.bias.clone()
    init_weights(layer, "default")
    assert torch.equal(layer.weight, before[0]) and torch.equal(layer.bias, before[1])
    with pytest.raises(ValueError, match="valid schemes"):
        init_weights(layer, "he")


def test_build_body_applies_spec_init():
    body = build_body({"type": "mlp", "hidden": [8, 8], "init": "orthogonal"}, (8,))
    for layer in _linears(body):
        assert torch.allclose(layer.weight @ layer.weight.T, 2.0 * torch.eye(8), atol=1e-5)
        assert not layer.bias.any()
    cnn = build_body({"type": "vgg", "channels": [4], "batch_norm": False, "features": 8},
                     (1, 8, 8))  # VGG defaults to kaiming
    assert all(not layer.bias.any() for layer in _linears(cnn))


def test_actor_critic_gains():
    body = MLP((8,), MLPSpec(hidden=[8]))
    policy, value = CategoricalHead(8, 4), ValueHead(8)
    init_actor_critic(body, policy, value)
    w = body.net[0].weight
    assert torch.allclose(w @ w.T, 2.0 * torch.eye(8), atol=1e-5)
    w = policy.linear.weight  # (4, 8): orthogonal rows of norm 0.01
    assert torch.allclose(w @ w.T, 1e-4 * torch.eye(4), atol=1e-8)
    assert value.linear.weight.norm().item() == pytest.approx(1.0, rel=1e-5)
    assert not policy.linear.bias.any() and not value.linear.bias.any()


def test_lstm_core_starts_orthogonal_with_zero_biases():
    core = LSTMCore(6, 6)
    w = core.lstm.weight_hh_l0  # (24, 6): orthonormal columns
    assert torch.allclose(w.T @ w, torch.eye(6), atol=1e-5)
    assert not core.lstm.bias_ih_l0.any() and not core.lstm.bias_hh_l0.any()


# ---- optimizers -----------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    {"type": "sgd"},
    {"type": "sgd", "momentum": 0.9},
    {"type": "sgd", "momentum": 0.9, "nesterov": True},
    {"type": "adagrad"},
    {"type": "rmsprop"},
    {"type": "rmsprop", "momentum": 0.5, "alpha": 0.9},
    {"type": "adam"},
    {"type": "adam", "betas": [0.5, 0.9], "weight_decay": 1e-4},
])
def test_every_optimizer_lowers_a_quadratic(raw):
    spec = OptimizerSpec.model_validate(raw)
    x = nn.Parameter(torch.tensor([3.0, -2.0]))
    target = torch.tensor([1.0, 1.0])

    def loss():
        return ((x - target) ** 2).sum()

    opt = build_optimizer([x], spec, lr=0.05)
    assert type(opt).__name__.lower() == raw["type"]
    start = loss().item()
    for _ in range(3):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < start
    group = opt.param_groups[0]
    assert group["lr"] == 0.05
    if raw["type"] == "sgd":
        assert (group["momentum"], group["nesterov"]) == (spec.momentum, spec.nesterov)


# ---- spec validation ------------------------------------------------------------------------

@pytest.mark.parametrize("model, raw", [
    (MLPSpec, {"hiden": [64]}),
    (NatureCNNSpec, {"filters": 32}),
    (VGGSpec, {"chanels": [8]}),
    (ResidualSpec, {"depth": 3}),
    (OptimizerSpec, {"learning_rate": 1e-3}),
])
def test_specs_reject_unknown_keys(model, raw):
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        model.model_validate(raw)


@pytest.mark.parametrize("raw", [
    {"type": "cnn"},
    {"type": "vgg", "chanels": [8]},
    {"type": "mlp", "hidden": [0]},
    {"type": "mlp", "init": "he"},
    {"type": "vgg", "dropout": 1.0},
])
def test_network_spec_rejects_bad_values(raw):
    with pytest.raises(ValidationError):
        parse_network_spec(raw)


@pytest.mark.parametrize("raw", [
    {"type": "sgd", "nesterov": True},  # torch would refuse Nesterov without momentum
    {"type": "adam", "nesterov": True},
    {"type": "adam", "betas": [0.9, 1.0]},
    {"type": "lbfgs"},
])
def test_optimizer_spec_rejects_bad_values(raw):
    with pytest.raises(ValidationError):
        OptimizerSpec.model_validate(raw)
