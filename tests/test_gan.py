"""GAN: the losses against hand-computed values, the D/G update order, options, learning."""

import math

import pytest
import torch
from generative_helpers import StepContext, train
from torch import nn
from torch.nn.utils import parametrize

from generative import MODELS, GANConfig
from generative.data import load_dataset
from generative.gan import (
    GAN,
    cutout,
    d_loss,
    diff_augment,
    g_loss,
    info_loss,
    kmeans,
    nearest,
    translate,
    truncated_randn,
)
from generative.metrics import fid


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_d_loss_by_hand():
    real, fake = torch.tensor([0.0, 2.0]), torch.tensor([-1.0, 1.0])
    # -(mean log D(x) + mean log(1 - D(G(z)))), log(1 - sigmoid(l)) = log sigmoid(-l)
    expected = -(log_sigmoid(0) + log_sigmoid(2)) / 2 - (log_sigmoid(1) + log_sigmoid(-1)) / 2
    assert float(d_loss(real, fake)) == pytest.approx(expected)
    # one-sided smoothing: real targets 0.9, fake targets stay 0
    s = 0.1
    real_part = -sum((1 - s) * log_sigmoid(v) + s * log_sigmoid(-v) for v in (0.0, 2.0)) / 2
    fake_part = -(log_sigmoid(1) + log_sigmoid(-1)) / 2
    assert float(d_loss(real, fake, smooth=s)) == pytest.approx(real_part + fake_part)


def test_g_losses_by_hand():
    fake = torch.tensor([-3.0, 0.5])
    nonsat = -(log_sigmoid(-3) + log_sigmoid(0.5)) / 2  # -E log D(G(z))
    minimax = (log_sigmoid(3) + log_sigmoid(-0.5)) / 2  # E log(1 - D(G(z)))
    assert float(g_loss(fake, "non_saturating")) == pytest.approx(nonsat)
    assert float(g_loss(fake, "minimax")) == pytest.approx(minimax)
    with pytest.raises(ValueError, match="non_saturating"):
        g_loss(fake, "wasserstein")


def test_minimax_generator_gradient_vanishes_where_d_rejects_fakes():
    """At logit -8 (D is sure the sample is fake): d/dl log(1 - sigmoid(l)) = -sigmoid(l)
    ~ -3e-4 (saturated), while d/dl -log sigmoid(l) = -(1 - sigmoid(l)) ~ -1."""
    for kind, expected in (("minimax", -1 / (1 + math.exp(8))),
                           ("non_saturating", -(1 - 1 / (1 + math.exp(8))))):
        logit = torch.tensor([-8.0], requires_grad=True)
        g_loss(logit, kind).backward()
        assert float(logit.grad) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8)])
@pytest.mark.parametrize("sn", [False, True])
def test_shapes_and_spectral_norm(shape, sn):
    torch.manual_seed(0)
    model = GAN(GANConfig(spectral_norm=sn), shape)
    s = model.sample(5)
    assert s.shape == (5, *shape) and 0 <= s.min() and s.max() <= 1
    d = model.discriminator
    assert d(torch.rand(5, *shape)).shape == (5,)
    layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert all(parametrize.is_parametrized(m, "weight") == sn for m in layers)
    assert any(isinstance(m, nn.BatchNorm2d) for m in d.modules()) == (not sn)
    if sn:  # after power iterations the largest singular value of each weight is ~1
        for _ in range(30):
            d(torch.rand(5, *shape))
        for m in layers:
            w = m.weight.detach().flatten(1)
            assert float(torch.linalg.matrix_norm(w, ord=2)) == pytest.approx(1.0, abs=0.05)


def test_training_step_order_and_gradients():
    """One D update then one G update; G's loss sends no gradient into D's weights, and D's
    update does not touch G."""
    torch.manual_seed(0)
    model = GAN(GANConfig(latent_dim=8, g_channels=[16, 8], d_channels=[8, 16]), (1, 8, 8))
    ctx = StepContext(model.configure_optimizers())
    seen = {}
    original = ctx.step

    def spy(name, loss):
        original(name, loss)
        seen[name] = ({n: p.grad for n, p in model.named_parameters()},
                      {n: p.detach().clone() for n, p in model.named_parameters()})

    ctx.step = spy
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    metrics = model.training_step(torch.rand(16, 1, 8, 8), ctx)
    assert ctx.calls == ["d", "g"]
    assert set(metrics) == {"d_loss", "g_loss", "d_real", "d_fake"}
    _, after_d = seen["d"]
    grads_g, after_g = seen["g"]
    for name in before:
        if name.startswith("generator"):
            assert torch.equal(after_d[name], before[name]), name  # D's step leaves G alone
        else:
            assert grads_g[name] is None, name  # G's loss: no gradient into D
            assert torch.equal(after_g[name], after_d[name]), name
    optimizers = model.configure_optimizers()
    assert {id(p) for g in optimizers["d"].param_groups for p in g["params"]} == {
        id(p) for p in model.discriminator.parameters()}


def test_ttur_learning_rates_and_betas():
    model = GAN(GANConfig(lr_d=4e-4, lr_g=1e-4), (1, 8, 8))
    opts = model.configure_optimizers()
    assert opts["d"].param_groups[0]["lr"] == 4e-4 and opts["g"].param_groups[0]["lr"] == 1e-4
    assert opts["g"].param_groups[0]["betas"] == (0.5, 0.999)


class Pixels(nn.Module):
    """Raw pixels as FID features (64 of them for 8x8 digits)."""

    num_features = 64

    def forward(self, x):
        return x.flatten(1).float()


@pytest.mark.parametrize("options", [{}, {"spectral_norm": True}, {"augment": ["translation"]}])
def test_samples_approach_the_digits(options):
    """FID on raw pixels between samples and the training digits: 10.4 at the start, 1.8
    (spectral norm: 4.2) after 10 epochs; the test-vs-train floor is 0.11."""
    data = load_dataset("digits")
    config_cls, build = MODELS["gan"]
    torch.manual_seed(0)
    model = build(config_cls(latent_dim=16, g_channels=[64, 32], d_channels=[32, 64],
                             **options), data.image_shape)
    before = fid(data.train, model.sample(300, torch.Generator().manual_seed(0)), Pixels())
    history = train(model, data, epochs=10)
    after = fid(data.train, model.sample(300, torch.Generator().manual_seed(0)), Pixels())
    assert before > 8
    assert after < before / 2, (before, after)
    assert all(math.isfinite(h["d_loss"]) and math.isfinite(h["g_loss"]) for h in history)
    d_real = model.evaluation_step(data.test)["d_real_prob"]
    assert d_real.shape == (len(data.test),) and 0 < float(d_real.mean()) < 1


def test_translation_moves_each_image_whole_within_an_eighth():
    """One lit pixel per 16x16 image: it lands within 2 pixels (16 / 8) of where it was, every
    image draws its own shift, nothing else lights up, and the gradient reaches the pixel."""
    x = torch.full((64, 1, 16, 16), -1.0)
    x[:, 0, 7, 9] = 1.0
    x.requires_grad_(True)
    y = translate(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    lit = (y == 1.0).nonzero()
    assert len(lit) == 64 and lit[:, 0].tolist() == list(range(64))
    dy, dx = lit[:, 2] - 7, lit[:, 3] - 9
    assert dy.abs().max() == 2 and dx.abs().max() == 2  # the whole range is drawn
    assert len(set(zip(dy.tolist(), dx.tolist(), strict=True))) > 10
    assert (y[y != 1.0] == -1.0).all()
    y.sum().backward()
    assert torch.equal(x.grad[:, 0, 7, 9], torch.ones(64))


def test_cutout_blanks_one_half_size_square_per_image():
    x = torch.ones(200, 1, 12, 12, requires_grad=True)
    y = cutout(x, torch.Generator().manual_seed(1))
    for image in y[:, 0]:
        rows, cols = (image == -1.0).nonzero(as_tuple=True)
        if len(rows) == 0:
            continue  # possible only for a square centred off the image: never here
        height = int(rows.max() - rows.min() + 1)
        width = int(cols.max() - cols.min() + 1)
        assert height <= 6 and width <= 6 and len(rows) == height * width  # one rectangle
    blanked = (y == -1.0).flatten(1).sum(1)
    assert blanked.max() == 36 and blanked.min() >= 9  # whole 6x6 squares, clipped at edges
    y.sum().backward()
    assert torch.equal(x.grad, (y != -1.0).float())  # kept pixels pass their gradient


def test_diff_augment_applies_the_policy_in_order_and_empty_is_identity():
    x = torch.rand(8, 1, 16, 16) * 2 - 1
    assert diff_augment(x, [], torch.Generator()) is x
    a = diff_augment(x, ["translation", "cutout"], torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    b = cutout(translate(x, g), g)
    assert torch.equal(a, b)


def test_truncated_randn_stays_inside_and_keeps_the_inside_draws():
    shape, t = (2000, 16), 0.5
    z = truncated_randn(shape, t, torch.Generator().manual_seed(3), torch.device("cpu"))
    plain = truncated_randn(shape, None, torch.Generator().manual_seed(3), torch.device("cpu"))
    assert z.shape == shape and z.abs().max() <= t
    inside = plain.abs() <= t  # the first draw's inside components are kept as they were
    assert torch.equal(z[inside], plain[inside])
    # a standard normal truncated to [-t, t] has variance 1 - 2 t phi(t) / (2 Phi(t) - 1)
    phi = math.exp(-t * t / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(t / math.sqrt(2))
    assert z.var().item() == pytest.approx(1 - 2 * t * phi / mass, rel=0.03)
    again = truncated_randn(shape, t, torch.Generator().manual_seed(3), torch.device("cpu"))
    assert torch.equal(z, again)


def test_truncation_is_a_sampling_setting_only():
    gan = GAN(GANConfig(latent_dim=8, g_channels=[8], d_channels=[8]), (1, 8, 8)).eval()
    seed = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    full = gan.sample(4, seed())
    gan.cfg.truncation = 0.1
    truncated = gan.sample(4, seed())
    assert truncated.shape == full.shape and not torch.equal(truncated, full)
    assert 0.0 <= truncated.min() and truncated.max() <= 1.0
    with pytest.raises(ValueError, match="truncation"):
        GANConfig(truncation=0.0)


def test_projection_discriminator_by_hand():
    """logit(x, y) = psi(phi(x)) + embed(y) . phi(x), phi the features before the last
    linear layer; without classes D has no embedding and reads no label."""
    torch.manual_seed(0)
    gan = GAN(GANConfig(latent_dim=8, g_channels=[8], d_channels=[8], classes=3), (1, 8, 8))
    d = gan.discriminator
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 2, 1, 2])
    with torch.no_grad():
        d.embed.weight.normal_()  # away from the small DCGAN init, so the term shows
        phi = d.net[:-1](x)
        psi = phi @ d.net[-1].weight[0] + d.net[-1].bias[0]
        expected = psi + torch.stack([phi[i] @ d.embed.weight[y[i]] for i in range(4)])
        assert torch.allclose(d(x, y), expected, atol=1e-5)
        assert not torch.allclose(d(x, y), d(x, torch.tensor([1, 0, 2, 0])))
    plain = GAN(GANConfig(latent_dim=8, g_channels=[8], d_channels=[8]), (1, 8, 8))
    assert plain.discriminator.embed is None and not plain.uses_labels and gan.uses_labels


def test_conditional_generator_reads_the_label_and_samples_cycle_through_them():
    torch.manual_seed(0)
    gan = GAN(GANConfig(latent_dim=8, g_channels=[8], d_channels=[8], classes=4,
                        spectral_norm=True), (1, 8, 8)).eval()
    z = torch.randn(2, 8)
    with torch.no_grad():
        assert not torch.allclose(gan.generator(z, torch.tensor([0, 0])),
                                  gan.generator(z, torch.tensor([3, 3])))
    seen = []
    forward = gan.generator.forward
    gan.generator.forward = lambda z, y: seen.append(y.tolist()) or forward(z, y)
    assert gan.sample(6).shape == (6, 1, 8, 8)
    assert seen == [[0, 1, 2, 3, 0, 1]]
    layers = [m for m in gan.discriminator.modules() if isinstance(m, nn.Embedding)]
    assert len(layers) == 1 and parametrize.is_parametrized(layers[0], "weight")


def digit_gan(**options):
    """The digits, a small spectral-norm GAN with ``options``, and each class's mean digit."""
    data = load_dataset("digits")
    config_cls, build = MODELS["gan"]
    torch.manual_seed(0)
    model = build(config_cls(latent_dim=16, g_channels=[64, 32], d_channels=[32, 64],
                             spectral_norm=True, **options), data.image_shape)
    means = torch.stack([data.train[data.train_labels == c].mean(0) for c in range(10)])
    return data, model, means


def sample_with_codes(model, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples (seed 0) and the code, label or cluster G was given for each."""
    seen = []
    forward = model.generator.forward
    model.generator.forward = lambda z, c: seen.append(c) or forward(z, c)
    try:
        s = model.sample(n, torch.Generator().manual_seed(0))
    finally:
        model.generator.forward = forward
    return s, seen[0]


def test_conditional_gan_draws_the_digit_it_is_asked_for():
    """Each sample's nearest class mean (raw pixels) against the label it was drawn with: at
    chance (~0.11) before training, 0.98 after 15 epochs (spectral norm); real test digits
    score 0.89 by this rule."""
    data, model, means = digit_gan(classes=10)

    def agreement() -> float:
        s = model.sample(500, torch.Generator().manual_seed(0))
        nearest = torch.cdist(s.flatten(1), means.flatten(1)).argmin(1)
        return float((nearest == torch.arange(500) % 10).float().mean())

    before = agreement()
    history = train(model, data, epochs=15, labels=True)
    assert before < 0.3
    assert agreement() > 0.8
    assert all(math.isfinite(h["d_loss"]) and math.isfinite(h["g_loss"]) for h in history)
    d_real = model.evaluation_step((data.test, data.test_labels))["d_real_prob"]
    assert d_real.shape == (len(data.test),)


def test_info_loss_by_hand_and_codes_exclude_classes():
    logits, codes = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), torch.tensor([0, 1])
    # -log softmax at the drawn code, averaged: the cross-entropy Q pays for each code
    expected = -(math.log(math.exp(2) / (math.exp(2) + 2)) + math.log(1 / (2 + math.e))) / 2
    assert float(info_loss(logits, codes)) == pytest.approx(expected)
    with pytest.raises(ValueError, match="classes=10 and model.codes=10 cannot be set"):
        GANConfig(codes=10, classes=10)
    gan = GAN(GANConfig(latent_dim=8, g_channels=[8], d_channels=[8], codes=3), (1, 8, 8))
    assert not gan.uses_labels and gan.discriminator.embed is None  # unsupervised: no labels
    logit, q = gan.discriminator(torch.rand(5, 1, 8, 8), with_code=True)
    assert logit.shape == (5,) and q.shape == (5, 3)
    assert GAN(GANConfig(latent_dim=8, g_channels=[8], d_channels=[8]),
               (1, 8, 8)).discriminator.q is None


def test_infogan_code_becomes_the_digit_without_labels():
    """InfoGAN on digits, no labels read: Q's cross-entropy on G's codes falls from ln 10 and
    the code comes to pick the digit: the mutual information between the code and each
    sample's nearest class mean (raw pixels) rises from ~0 towards ln 10 = 2.30 nats."""
    data, model, means = digit_gan(codes=10)

    def code_class_information() -> float:
        s, codes = sample_with_codes(model, 2000)
        joint = torch.zeros(10, 10)
        joint.index_put_((codes, nearest(s.flatten(1), means.flatten(1))), torch.ones(2000),
                         accumulate=True)
        joint /= 2000
        outer = joint.sum(1, keepdim=True) * joint.sum(0, keepdim=True)
        return float((joint * (joint / outer).log()).nan_to_num().sum())

    before = code_class_information()
    history = train(model, data, epochs=15)
    info = [h["info_loss"] for h in history]
    after = code_class_information()
    print(f"I(code; class) {before:.3f} -> {after:.3f} nats; Q's cross-entropy "
          f"{sum(info[:20]) / 20:.3f} -> {sum(info[-20:]) / 20:.3f}")
    assert sum(info[:20]) / 20 > 1.5 and sum(info[-20:]) / 20 < 0.3
    assert before < 0.2 and after > 1.0


def test_kmeans_and_nearest_by_hand():
    # two tight pairs: k-means++ seeds one in each (the other pair is ~25x likelier by D^2;
    # this seed does), and Lloyd's step moves each centroid to its pair's mean
    x = torch.tensor([[0.0, 0.0], [0.0, 2.0], [10.0, 0.0], [10.0, 2.0]])
    centroids = kmeans(x, 2, seed=3)
    assert sorted(centroids.tolist()) == [[0.0, 1.0], [10.0, 1.0]]
    assert nearest(torch.tensor([[1.0, 1.0], [9.0, 5.0]]), torch.tensor(
        [[0.0, 0.0], [10.0, 0.0]])).tolist() == [0, 1]
    with pytest.raises(ValueError, match="k-means needs 1 <= k <= 4 points; got k=5"):
        kmeans(x, 5)
    with pytest.raises(ValueError, match="classes=10 and model.clusters=20 cannot be set"):
        GANConfig(classes=10, clusters=20)


def test_self_conditioned_gan_fits_clusters_and_samples_by_their_shares():
    gan = GAN(GANConfig(latent_dim=8, g_channels=[8], d_channels=[8], clusters=2), (1, 4, 4))
    assert not gan.uses_labels  # unsupervised: the batches carry no labels
    images = torch.zeros(6, 1, 4, 4)
    images[4:] = 1.0  # four black images, two white ones
    gan.fit_data(images)
    assert sorted(gan.centroids.sum(1).tolist()) == [0.0, 16.0]
    white = int(gan.centroids.sum(1).argmax())
    assert float(gan.cluster_share[white]) == pytest.approx(1 / 3)
    _, y = gan._split(torch.ones(3, 1, 4, 4))  # a white batch is in the white cluster
    assert y.tolist() == [white] * 3
    _, clusters = sample_with_codes(gan, 3000)
    assert float((clusters == white).float().mean()) == pytest.approx(1 / 3, abs=0.03)
    state = gan.state_dict()  # checkpoints carry the clusters
    assert torch.equal(state["centroids"], gan.centroids)


def test_self_conditioned_gan_draws_from_the_cluster_it_is_asked_for():
    """k-means clusters of the digits' pixels, no labels read: each sample's nearest centroid
    against the cluster it was drawn from, at chance before training, most after 15 epochs."""
    data, model, _ = digit_gan(clusters=10)
    model.fit_data(data.train)

    def agreement() -> float:
        s, clusters = sample_with_codes(model, 1000)
        return float((nearest(s.flatten(1), model.centroids) == clusters).float().mean())

    before = agreement()
    history = train(model, data, epochs=15)
    after = agreement()
    print(f"sample in its own cluster: {before:.3f} -> {after:.3f}")
    assert all(math.isfinite(h["d_loss"]) and math.isfinite(h["g_loss"]) for h in history)
    assert before < 0.3 and after > 0.8
