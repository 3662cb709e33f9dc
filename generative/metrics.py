"""Sample-quality metrics from the lab's own digit classifier, and ``evaluate_model``.

FID and KID need a feature space and the Inception Score a classifier. On MNIST-sized digits
an ImageNet Inception network is the wrong judge (and needs weights we do not download), so,
as is usual for MNIST, a small classifier stands in: the backbone's VGG stack trained on the
dataset's training split (random shifts of up to 2 pixels on 28x28), cached per dataset. Its
penultimate features (``features``, the VGG's 128-unit layer) give FID and KID, its softmax the
Inception Score. The statistics come from torchmetrics:

- FID = |mu_r - mu_f|^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)) between Gaussian fits of the
  features; biased in the sample size, so a model's FID is only comparable with the real-vs-real
  floor computed with the same sizes: ``fid_real_floor`` = FID(train digits, test digits), and a
  model's ``fid`` = FID(train digits, as many samples as there are test digits).
- KID: the unbiased squared MMD with the cubic polynomial kernel, averaged over subsets.
- IS = exp(E_x KL(p(y|x) || p(y))), mean over 10 splits (p(y) estimated per split); at most
  the number of classes. Splits hold as many images as the test set, and the real test digits
  give ``inception_score_real`` on one split of the same size.

Numbers from different classifiers are not comparable: the cache file is kept beside the runs
and its test accuracy is reported with every evaluation.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from lab.backbone import OptimizerSpec, VGGSpec, build_body, build_optimizer
from lab.checkpoint import load, save_atomic

CLASSIFIER_SPEC = VGGSpec(channels=[32, 64], convs_per_block=1, batch_norm=True, dropout=0.3,
                          features=128)
CLASSIFIER_VERSION = 1  # bump when the architecture or recipe changes: old caches retrain


class DigitClassifier(nn.Module):
    """VGG body (backbone) + a linear layer to class logits."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        self.body = build_body(CLASSIFIER_SPEC, image_shape)
        self.head = nn.Linear(self.body.out_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class ClassifierOutput(nn.Module):
    """A frozen classifier's ``features`` or ``logits`` as a torchmetrics feature module:
    float images in [0, 1] (N, C, H, W) -> (N, num_features)."""

    def __init__(self, classifier: DigitClassifier, output: str):
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.output = output
        self.num_features = (classifier.body.out_dim if output == "features"
                             else classifier.head.out_features)

    def train(self, mode: bool = True) -> ClassifierOutput:  # torchmetrics may call .train()
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.output == "features":
            return self.classifier.features(x).float()
        # IS takes log(mean softmax): in float32 a sure classifier's probabilities underflow
        # to 0 for some class over a whole split, and 0 * log 0 gives NaN
        return self.classifier(x).double()


# --- the classifier: training and cache ----------------------------------------------------

def random_shift(x: torch.Tensor, pixels: int, generator: torch.Generator | None
                 ) -> torch.Tensor:
    """Each image translated by its own (dy, dx) in [-pixels, pixels], zero-filled."""
    if pixels == 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (pixels,) * 4)
    dy, dx = torch.randint(0, 2 * pixels + 1, (2, b, 1), generator=generator).to(x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


@torch.no_grad()
def accuracy(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 500) -> float:
    classifier.eval()
    device = next(classifier.parameters()).device
    correct = sum(int((classifier(images[i:i + batch_size].to(device)).argmax(1).cpu()
                       == labels[i:i + batch_size]).sum()) for i in range(0, len(images),
                                                                          batch_size))
    return correct / len(images)


def train_classifier(data, *, epochs: int = 25, batch_size: int = 64, lr: float = 2e-3,
                     shift: int | None = None, seed: int = 0,
                     device: str | torch.device = "cpu") -> tuple[DigitClassifier, float]:
    """Adam with a cosine schedule on ``data.train`` (grey levels, random shifts of up to
    ``shift`` pixels, default H / 14: 2 on 28x28, 1 on 8x8); returns the classifier (eval
    mode) and its accuracy on ``data.test``."""
    if shift is None:
        shift = max(1, round(data.image_shape[1] / 14))
    generator = torch.Generator().manual_seed(seed)
    # the global RNG (init, dropout) is seeded inside and restored after; grad is on even
    # when evaluate_model calls this under no_grad
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        model = DigitClassifier(data.image_shape, data.num_classes).to(device)
        opt = build_optimizer(model.parameters(), OptimizerSpec(), lr)
        steps = epochs * math.ceil(len(data.train) / batch_size)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(data.train), generator=generator)
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                x = random_shift(data.train[idx], shift, generator).to(device)
                loss = F.cross_entropy(model(x), data.train_labels[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                schedule.step()
    return model.eval(), accuracy(model, data.test, data.test_labels)


def fingerprint(data) -> str:
    """A short hash of the training images and labels: a cache made from another split or
    another dataset under the same name is not reused."""
    h = hashlib.sha1(data.train.contiguous().numpy().tobytes())
    h.update(data.train_labels.numpy().tobytes())
    return h.hexdigest()[:16]


def classifier_for(data, cache_dir: str | Path, *, device: str | torch.device = "cpu",
                   seed: int = 0) -> tuple[DigitClassifier, float]:
    """The dataset's classifier and its test accuracy, from ``cache_dir/classifier-NAME.pt``
    (loaded with weights_only) or trained now and written there atomically."""
    path = Path(cache_dir) / f"classifier-{data.name}.pt"
    key = {"version": CLASSIFIER_VERSION, "fingerprint": fingerprint(data), "seed": seed}
    model = DigitClassifier(data.image_shape, data.num_classes)
    if path.is_file():
        saved = load(path)
        if all(saved.get(k) == v for k, v in key.items()):
            model.load_state_dict(saved["state_dict"])
            return model.to(device).eval(), float(saved["test_accuracy"])
    model, acc = train_classifier(data, seed=seed, device=device)
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    save_atomic({**key, "state_dict": state, "test_accuracy": acc}, path)
    return model, acc


# --- the statistics (torchmetrics) ---------------------------------------------------------
# normalize=False everywhere: images reach the feature module as given (floats in [0, 1]);
# InceptionScore's normalize=True would turn them into bytes 0..255 even for a custom module.

@contextmanager
def _quiet():
    """torchmetrics warns that KID and IS keep every feature vector (ours are small) and, for
    one IS split, that the std of one value is undefined (we report 0)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features")
        warnings.filterwarnings("ignore", message=r"std\(\): degrees of freedom")
        yield


def _batched(metric, images: torch.Tensor, batch_size: int, **kwargs) -> None:
    device = metric.device
    for i in range(0, len(images), batch_size):
        metric.update(images[i:i + batch_size].to(device), **kwargs)


def fid(real: torch.Tensor, fake: torch.Tensor, features: nn.Module,
        batch_size: int = 500) -> float:
    """Frechet distance between the ``features`` of two image sets (N, C, H, W) in [0, 1]."""
    metric = FrechetInceptionDistance(feature=features, normalize=False,
                                      input_img_size=tuple(real.shape[1:]))
    metric = metric.to(next(features.parameters(), torch.empty(0)).device)
    _batched(metric, real, batch_size, real=True)
    _batched(metric, fake, batch_size, real=False)
    return float(metric.compute())


def kid(real: torch.Tensor, fake: torch.Tensor, features: nn.Module, *, subsets: int = 100,
        subset_size: int = 1000, seed: int = 0, batch_size: int = 500) -> tuple[float, float]:
    """Kernel Inception Distance (mean, std over ``subsets`` random subsets of
    min(subset_size, N_real, N_fake) images each; the subsets are drawn from ``seed``)."""
    size = min(subset_size, len(real), len(fake))
    with _quiet():
        metric = KernelInceptionDistance(feature=features, subsets=subsets, subset_size=size,
                                         normalize=False)
    metric = metric.to(next(features.parameters(), torch.empty(0)).device)
    _batched(metric, real, batch_size, real=True)
    _batched(metric, fake, batch_size, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def inception_score(images: torch.Tensor, logits: nn.Module, *, splits: int = 10,
                    seed: int = 0, batch_size: int = 500) -> tuple[float, float]:
    """exp(E KL(p(y|x) || p(y))) from the classifier ``logits``: (mean, std) over ``splits``
    (the images are shuffled with ``seed`` first, as torchmetrics does)."""
    with _quiet():
        metric = InceptionScore(feature=logits, splits=splits, normalize=False)
    metric = metric.to(next(logits.parameters(), torch.empty(0)).device)
    _batched(metric, images, batch_size)
    with torch.random.fork_rng(devices=[]), _quiet():
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std) if splits > 1 else 0.0


def inception_parts(probs: torch.Tensor) -> tuple[float, float]:
    """The two halves of log IS on class probabilities ``probs`` (n, classes), all n as one
    split: (H(p(y)), E_x H(p(y|x))) in nats, so log IS = first - second. The first is the
    spread over classes (ln 10 = 2.303 for ten balanced digits), the second the classifier's
    doubt about each image (0 for crisp digits): which one holds a model's IS back."""
    probs = probs.double()
    marginal = probs.mean(0)
    h_y = float(-(marginal * marginal.clamp_min(1e-30).log()).sum())
    h_yx = float(-(probs * probs.clamp_min(1e-30).log()).sum(1).mean())
    return h_y, h_yx


# --- evaluate_model -----------------------------------------------------------------------

@torch.no_grad()
def _per_example_mean(fn, images: torch.Tensor, device, batch_size: int) -> float:
    total = 0.0
    for i in range(0, len(images), batch_size):
        total += float(fn(images[i:i + batch_size].to(device)).double().sum())
    return total / len(images)


@torch.no_grad()
def sample_metrics(model: nn.Module, data, *, device, generator: torch.Generator | None,
                   quick: bool = False, cache_dir: str | Path = "runs/cache",
                   batch_size: int = 500) -> dict[str, float]:
    """FID, KID and IS of the model's samples beside the real-vs-real floor (see the module
    docstring for the sizes); IS on 10 splits of len(test) samples (quick: 2 splits)."""
    classifier, acc = classifier_for(data, cache_dir, device=device)
    feats = ClassifierOutput(classifier, "features")
    logits = ClassifierOutput(classifier, "logits")
    n = len(data.test)
    splits = 2 if quick else 10
    fake = torch.cat([model.sample(min(batch_size, splits * n - i), generator).float().cpu()
                      for i in range(0, splits * n, batch_size)])
    kid_mean, kid_std = kid(data.train, fake[:n], feats)
    kid_floor, _ = kid(data.train, data.test, feats)
    is_mean, is_std = inception_score(fake, logits, splits=splits)
    is_real, _ = inception_score(data.test, logits, splits=1)
    probs = torch.cat([F.softmax(logits(fake[i:i + batch_size].to(device)).float(), 1).cpu()
                       for i in range(0, len(fake), batch_size)])
    h_y, h_yx = inception_parts(probs)
    return {"fid": fid(data.train, fake[:n], feats),
            "fid_real_floor": fid(data.train, data.test, feats),
            "kid": kid_mean, "kid_std": kid_std, "kid_real_floor": kid_floor,
            "inception_score": is_mean, "inception_score_std": is_std,
            "inception_score_real": is_real, "inception_class_entropy": h_y,
            "inception_doubt_entropy": h_yx, "classifier_test_accuracy": acc}


def evaluate_model(model: nn.Module, data, *, device: str | torch.device,
                   generator: torch.Generator | None = None, quick: bool = False,
                   cache_dir: str | Path = "runs/cache",
                   with_samples: bool | None = None) -> dict[str, float]:
    """The final numbers of a trained model on ``data`` (an ImageData), by ``model.kind``:

    - pixelcnn: exact test NLL (``test_nll`` nats per image, ``test_bpd``) on the fixed
      binarization of the test split (grey test images for the categorical likelihood);
    - vae: ``test_nll`` = -IWAE_k with k = 1000 (quick: 50) and ``test_elbo_nll``, same split;
    - gan: FID, KID, IS and the real-vs-real floors (``sample_metrics``).

    ``with_samples`` adds the sample metrics to a PixelCNN or VAE too (default: VAE yes,
    PixelCNN no: pixel-by-pixel sampling of thousands of images is slow on a CPU)."""
    was_training = model.training
    model.eval()
    try:
        out: dict[str, float] = {}
        binary = getattr(model, "binary", False)
        test = data.test_binary if binary else data.test
        dims = math.prod(data.image_shape)
        if model.kind == "pixelcnn":
            out["test_nll"] = _per_example_mean(model.nll, test, device, 100)
        elif model.kind == "vae":
            k = 50 if quick else 1000
            out["test_nll"] = _per_example_mean(
                lambda x: model.iwae_nll(x, k, generator), test, device, 100)
            out["test_elbo_nll"] = _per_example_mean(lambda x: -model.elbo(x, generator), test,
                                                     device, 500)
            out["iwae_k"] = float(k)
        elif model.kind != "gan":
            raise ValueError(f"no evaluation for model kind {model.kind!r}")
        if "test_nll" in out:
            out["test_bpd"] = out["test_nll"] / (dims * math.log(2.0))
        if with_samples is None:
            with_samples = model.kind != "pixelcnn"
        if with_samples:
            out.update(sample_metrics(model, data, device=device, generator=generator,
                                      quick=quick, cache_dir=cache_dir))
        return out
    finally:
        model.train(was_training)
