"""generative.metrics: FID / KID / IS on hand-checkable feature sets, the cached classifier,
evaluate_model's numbers for each model kind."""

import math

import pytest
import torch
from torch import nn

from generative import GANConfig, PixelCNNConfig, VAEConfig, build_model
from generative import metrics as gm
from generative.data import load_dataset


class Identity(nn.Module):
    """Features = the values of (N, 1, 1, d) 'images'."""

    def __init__(self, d: int):
        super().__init__()
        self.num_features = d

    def forward(self, x):
        return x.flatten(1).double()


def as_images(features: torch.Tensor) -> torch.Tensor:
    return features.view(len(features), 1, 1, -1)


def test_fid_of_identical_sets_is_zero_and_of_a_shift_is_its_squared_length():
    torch.manual_seed(0)
    x = as_images(torch.randn(300, 5, dtype=torch.float64) * torch.arange(1.0, 6.0))
    assert abs(gm.fid(x, x, Identity(5))) < 1e-3
    shift = torch.tensor([1.0, 2.0, 0.0, 0.0, -1.0]).view(1, 1, 1, 5)
    assert gm.fid(x, x + shift, Identity(5)) == pytest.approx(6.0, abs=1e-3)  # 1 + 4 + 1


def test_fid_in_one_dimension_by_hand():
    real = as_images(torch.tensor([[0.0], [2.0]]))  # mean 1, variance 2
    fake = as_images(torch.tensor([[1.0], [5.0], [9.0]]))  # mean 5, variance 16
    expected = (5 - 1) ** 2 + 2 + 16 - 2 * math.sqrt(2 * 16)
    assert gm.fid(real, fake, Identity(1)) == pytest.approx(expected, rel=1e-4)


def test_kid_equals_the_unbiased_mmd_with_the_cubic_kernel_by_hand():
    """One subset holding every sample: KID is exactly the unbiased MMD^2 with
    k(x, y) = (x.y / d + 1)^3, computed here with plain loops."""
    torch.manual_seed(0)
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64) + 0.5

    def k(a, b):
        return (float(a @ b) / 3 + 1) ** 3

    m = 6
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    mean, std = gm.kid(as_images(x), as_images(y), Identity(3), subsets=1, subset_size=6)
    assert mean == pytest.approx(xx + yy - 2 * xy, rel=1e-6) and std == 0.0
    big = as_images(torch.randn(400, 4))
    same, _ = gm.kid(big, big, Identity(4), subset_size=200)
    shifted, _ = gm.kid(big, big + 1.0, Identity(4), subset_size=200)
    assert shifted > 20 * abs(same)
    assert gm.kid(big, big + 1.0, Identity(4), subset_size=200)[0] == shifted  # seeded subsets


def test_inception_score_hand_cases():
    labels = torch.arange(10).repeat(50)
    confident = as_images(50.0 * nn.functional.one_hot(labels, 10).float())
    assert gm.inception_score(confident, Identity(10), splits=1)[0] == pytest.approx(10, rel=1e-4)
    one_class = as_images(50.0 * nn.functional.one_hot(torch.zeros(500).long(), 10).float())
    assert gm.inception_score(one_class, Identity(10), splits=1)[0] == pytest.approx(1.0)
    unsure = as_images(torch.zeros(500, 10))  # p(y|x) uniform for every x
    assert gm.inception_score(unsure, Identity(10), splits=1)[0] == pytest.approx(1.0)
    # two classes each predicted surely: IS = exp(H(p(y))) = 2
    two = as_images(50.0 * nn.functional.one_hot(torch.arange(2).repeat(100), 10).float())
    assert gm.inception_score(two, Identity(10), splits=1)[0] == pytest.approx(2.0, rel=1e-4)


def test_inception_parts_hand_cases_and_log_is():
    crisp = nn.functional.one_hot(torch.arange(10).repeat(50), 10).float()
    assert gm.inception_parts(crisp) == pytest.approx((math.log(10), 0.0))
    half = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])  # one doubt of ln 2, two classes
    assert gm.inception_parts(half) == pytest.approx((math.log(2), math.log(2)))
    probs = torch.softmax(torch.randn(500, 10, generator=torch.Generator().manual_seed(0)), 1)
    h_y, h_yx = gm.inception_parts(probs)  # one split: IS = exp(H(y) - E H(y|x))
    assert math.exp(h_y - h_yx) == pytest.approx(
        gm.inception_score(as_images(probs.log()), Identity(10), splits=1)[0], rel=1e-4)


def test_random_shift_moves_images_by_at_most_the_shift():
    x = torch.zeros(64, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0
    assert torch.equal(gm.random_shift(x, 0, None), x)
    moved = gm.random_shift(x, 2, torch.Generator().manual_seed(0))
    assert torch.equal(moved.sum((1, 2, 3)), torch.ones(64))  # nothing lost within 2 pixels
    where = moved[:, 0].flatten(1).argmax(1)
    rows, cols = where // 9, where % 9
    assert rows.min() == 2 and rows.max() == 6 and cols.min() == 2 and cols.max() == 6


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory):
    """digits + a cache dir holding its classifier (trained once, ~3 s; under no_grad, as
    evaluate_model calls it)."""
    data = load_dataset("digits")
    cache = tmp_path_factory.mktemp("cache")
    torch.manual_seed(0)
    with torch.no_grad():
        model, acc = gm.classifier_for(data, cache)
    return data, cache, model, acc


def test_classifier_is_accurate_and_cached(digits_cache, monkeypatch):
    data, cache, model, acc = digits_cache
    assert acc >= 0.98  # measured 0.99 on the 300 test digits
    assert gm.accuracy(model, data.test, data.test_labels) == acc
    path = cache / "classifier-digits.pt"
    assert path.is_file() and not list(cache.glob(".*.tmp"))

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although the cache matches")

    monkeypatch.setattr(gm, "train_classifier", no_training)
    again, acc2 = gm.classifier_for(data, cache)
    assert acc2 == acc
    assert torch.equal(again(data.test[:50]), model(data.test[:50]))
    other_split = load_dataset("digits", seed=1)  # same name, other training digits
    with pytest.raises(AssertionError, match="retrained"):
        gm.classifier_for(other_split, cache)


def test_real_digits_score_well_on_the_classifier(digits_cache):
    data, _, model, _ = digits_cache
    logits = gm.ClassifierOutput(model, "logits")
    is_real, _ = gm.inception_score(data.test, logits, splits=1)
    assert is_real > 8.5  # 300 digits of 10 balanced classes, 98.7% classified right
    feats = gm.ClassifierOutput(model, "features")
    floor = gm.fid(data.train, data.test, feats)
    noise = gm.fid(data.train, torch.rand_like(data.test), feats)
    assert floor < noise / 20


def test_evaluate_model_per_kind(digits_cache):
    data, cache, _, acc = digits_cache
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    gan = build_model(GANConfig(latent_dim=8, g_channels=[16, 8], d_channels=[8, 16]),
                      data.image_shape)
    out = gm.evaluate_model(gan, data, device="cpu", generator=g, quick=True, cache_dir=cache)
    assert set(out) == {"fid", "fid_real_floor", "kid", "kid_std", "kid_real_floor",
                        "inception_score", "inception_score_std", "inception_score_real",
                        "inception_class_entropy", "inception_doubt_entropy",
                        "classifier_test_accuracy"}
    assert all(math.isfinite(v) for v in out.values())
    assert out["classifier_test_accuracy"] == acc
    assert out["fid_real_floor"] < out["fid"] and out["kid_real_floor"] < out["kid"]
    assert out["inception_score"] < out["inception_score_real"]  # an untrained generator
    assert gan.training  # the mode is restored

    vae = build_model(VAEConfig(latent_dim=4, channels=[8, 8], hidden=16), data.image_shape)
    out = gm.evaluate_model(vae, data, device="cpu", generator=g, quick=True, cache_dir=cache)
    assert out["iwae_k"] == 50 and "fid" in out
    assert out["test_nll"] <= out["test_elbo_nll"] + 0.5  # IWAE_50 vs a one-sample ELBO
    assert out["test_bpd"] == pytest.approx(out["test_nll"] / (64 * math.log(2)))

    pixelcnn = build_model(PixelCNNConfig(channels=8, layers=1, output_channels=8),
                           data.image_shape)
    out = gm.evaluate_model(pixelcnn, data, device="cpu", generator=g, cache_dir=cache)
    with torch.no_grad():
        exact = float(pixelcnn.eval().nll(data.test_binary).mean())
    assert set(out) == {"test_nll", "test_bpd"}
    assert out["test_nll"] == pytest.approx(exact, rel=1e-5)


@pytest.mark.slow
def test_mnist5k_classifier_reaches_98_percent(tmp_path):
    """~2 minutes on one CPU thread: 25 epochs of the 4,500 training digits (measured 98.6%
    on the 500 test digits)."""
    data = load_dataset("mnist5k")
    _, acc = gm.classifier_for(data, tmp_path)
    assert acc >= 0.98
