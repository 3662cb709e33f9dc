"""PixelCNN: causal masks, an exact normalized likelihood, sampling and completion, learning."""

import itertools
import math

import pytest
import torch
from generative_helpers import train

from generative import MODELS, PixelCNNConfig
from generative.data import load_dataset
from generative.pixelcnn import PixelCNN, causal_mask

TINY = dict(channels=8, layers=2, first_kernel=3, kernel=3, output_channels=8)


def dependency_map(model: PixelCNN, shape, i: int, j: int) -> torch.Tensor:
    """(H, W) bool: which input pixels (any channel) the logits at pixel (i, j) depend on,
    over 16 random images (one image can leave every ReLU of a path off)."""
    torch.manual_seed(1)
    x = torch.rand(16, *shape, requires_grad=True)
    out = model(x)
    target = out[:, :, i, j] if model.binary else out[:, :, :, i, j]
    (grad,) = torch.autograd.grad(target.sum(), x)  # images are independent: no batch norm
    return (grad != 0).any(0).any(0)


def test_masks_by_hand():
    assert causal_mask(3, "A").tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert causal_mask(3, "B").tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="odd"):
        causal_mask(4, "A")


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("likelihood,channels", [("binary", 1), ("binary", 3),
                                                  ("categorical", 1)])
def test_no_pixel_depends_on_itself_or_later_pixels(gated, likelihood, channels):
    shape = (channels, 5, 5)
    model = PixelCNN(PixelCNNConfig(gated=gated, likelihood=likelihood, **TINY), shape)
    for i, j in itertools.product(range(5), range(5)):
        dep = dependency_map(model, shape, i, j).flatten()
        k = i * 5 + j
        assert not dep[k:].any(), f"logit at {(i, j)} sees pixel {int(dep[k:].nonzero()[0]) + k}"
        if j > 0:
            assert dep[k - 1], f"logit at {(i, j)} ignores its left neighbour"
        if i > 0:
            assert dep[k - 5], f"logit at {(i, j)} ignores the pixel above"


def test_gated_stacks_have_no_blind_spot_unlike_plain_masked_convs():
    """Stacked 3x3 masked convs never see the pixels up and to the right of a growing
    triangle (the blind spot); the vertical + horizontal stacks see every earlier pixel."""
    cfg = dict(TINY, layers=4)
    shape = (1, 5, 5)
    earlier = torch.arange(25).view(5, 5) < 4 * 5 + 1  # every pixel before (4, 1)
    gated = dependency_map(PixelCNN(PixelCNNConfig(gated=True, **cfg), shape), shape, 4, 1)
    plain = dependency_map(PixelCNN(PixelCNNConfig(gated=False, **cfg), shape), shape, 4, 1)
    assert torch.equal(gated, earlier)
    assert not plain[3, 4] and not plain[2, 4]  # up and to the right: never reached
    assert plain[3, 2] and plain[4, 0]


def test_nll_is_the_sum_of_per_pixel_cross_entropies_by_hand():
    torch.manual_seed(0)
    model = PixelCNN(PixelCNNConfig(**TINY), (1, 3, 3))
    x = torch.tensor([[1.0, 0, 1], [0, 0, 1], [1, 1, 0]]).view(1, 1, 3, 3)
    logits = model(x)[0, 0].detach()
    by_hand = 0.0
    for i, j in itertools.product(range(3), range(3)):
        p = 1.0 / (1.0 + math.exp(-float(logits[i, j])))
        by_hand -= math.log(p) if x[0, 0, i, j] == 1 else math.log(1.0 - p)
    nll = model.nll(x).detach()
    assert nll.shape == (1,)
    assert float(nll) == pytest.approx(by_hand, rel=1e-5)
    out = model.evaluation_step(x)
    assert float(out["nll_bpd"]) == pytest.approx(by_hand / (9 * math.log(2)), rel=1e-5)


@pytest.mark.parametrize("gated", [False, True])
def test_binary_likelihood_sums_to_one_over_all_images(gated):
    """sum over all 2^9 binary 3x3 images of p(x) = 1: the conditionals form a distribution."""
    torch.manual_seed(0)
    model = PixelCNN(PixelCNNConfig(gated=gated, **TINY), (1, 3, 3))
    every = torch.tensor(list(itertools.product([0.0, 1.0], repeat=9))).view(-1, 1, 3, 3)
    with torch.no_grad():
        total = torch.exp(-model.nll(every).double()).sum()
    assert float(total) == pytest.approx(1.0, abs=1e-5)


def test_categorical_likelihood_sums_to_one_over_all_images():
    torch.manual_seed(0)
    model = PixelCNN(PixelCNNConfig(likelihood="categorical", **TINY), (1, 1, 2))
    levels = torch.tensor(list(itertools.product(range(256), repeat=2)), dtype=torch.float32)
    with torch.no_grad():
        total = torch.exp(-model.nll((levels / 255).view(-1, 1, 1, 2)).double()).sum()
    assert float(total) == pytest.approx(1.0, abs=1e-4)


def test_sample_and_complete():
    torch.manual_seed(0)
    model = PixelCNN(PixelCNNConfig(**TINY), (1, 6, 6)).eval()
    a = model.sample(4, torch.Generator().manual_seed(3))
    b = model.sample(4, torch.Generator().manual_seed(3))
    assert a.shape == (4, 1, 6, 6) and torch.equal(a, b)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    images = torch.bernoulli(torch.full((4, 1, 6, 6), 0.5))
    top = model.complete(images, given=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(top[:, :, :3], images[:, :, :3])
    assert not torch.equal(top, images)  # 72 redrawn pixels: some change (p ~ 1 - 2^-72)
    mask = torch.rand(4, 1, 6, 6) < 0.5
    filled = model.complete(images, given=mask)
    assert torch.equal(filled[mask], images[mask])
    assert torch.equal(model.complete(images, given=torch.ones(1, 1, 6, 6, dtype=torch.bool)),
                       images)
    grey = PixelCNN(PixelCNNConfig(likelihood="categorical", **TINY), (1, 4, 4)).eval()
    s = grey.sample(2)
    assert torch.equal(s, torch.round(s * 255) / 255) and 0 <= s.min() <= s.max() <= 1


def test_completion_draws_each_pixel_from_its_conditional():
    """On a 1x2 image: with pixel 0 given, pixel 1 is drawn with p(x1 = 1 | x0) from one
    forward pass: the frequency over 4000 draws matches it."""
    torch.manual_seed(0)
    model = PixelCNN(PixelCNNConfig(**TINY), (1, 1, 2)).eval()
    x0 = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2).repeat(4000, 1, 1, 1)
    with torch.no_grad():
        p1 = float(torch.sigmoid(model(x0[:1])[0, 0, 0, 1]))
    known = torch.tensor([True, False]).view(1, 1, 1, 2)
    drawn = model.complete(x0, given=known, generator=torch.Generator().manual_seed(0))
    freq = float(drawn[:, 0, 0, 1].mean())
    assert abs(freq - p1) < 4 * math.sqrt(p1 * (1 - p1) / 4000)


@pytest.mark.parametrize("gated", [False, True])
def test_loss_falls_on_digits(gated):
    data = load_dataset("digits")
    config_cls, build = MODELS["pixelcnn"]
    torch.manual_seed(0)
    model = build(config_cls(gated=gated, channels=16, layers=2, first_kernel=5,
                             output_channels=32), data.image_shape)
    before = float(model.evaluation_step(data.test_binary)["nll"].mean())
    history = train(model, data, epochs=3)
    after = float(model.evaluation_step(data.test_binary)["nll"].mean())
    assert before > 40  # ~ 64 ln 2 = 44.4 nats for a near-uniform start
    assert after < 31, (before, after)
    assert history[-1]["loss"] < history[0]["loss"] - 10
    assert history[-1]["nll_bpd"] == pytest.approx(history[-1]["loss"] / (64 * math.log(2)))
