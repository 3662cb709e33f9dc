"""generative/data.py: the bundled sets' shapes and splits, binarization, and the folder loaders
(IDX and CIFAR batches written here in tmp_path) with their one-line errors."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from generative.data import DatasetError, batches, load_dataset, num_batches


@pytest.fixture(scope="module")
def mnist5k():
    return load_dataset("mnist5k")


def test_mnist5k_is_4500_500_stratified_in_unit_range(mnist5k):
    d = mnist5k
    assert d.train.shape == (4500, 1, 28, 28) and d.test.shape == (500, 1, 28, 28)
    assert d.train.dtype == torch.float32 and d.image_shape == (1, 28, 28)
    assert d.num_classes == 10
    assert d.test_labels.bincount().tolist() == [50] * 10
    assert d.train_labels.bincount().tolist() == [450] * 10
    assert 0.0 <= d.train.min() and d.train.max() == 1.0
    # real digits: mostly black background, some ink
    assert 0.08 < d.train.mean() < 0.2
    # no test image is also a train image
    train_keys = {hash(x.numpy().tobytes()) for x in d.train}
    assert not any(hash(x.numpy().tobytes()) in train_keys for x in d.test)


def test_split_and_binarization_are_deterministic_per_seed(mnist5k):
    again = load_dataset("mnist5k")
    assert torch.equal(again.test, mnist5k.test) and torch.equal(again.train, mnist5k.train)
    assert torch.equal(again.test_binary, mnist5k.test_binary)
    other = load_dataset("mnist5k", seed=1)
    assert not torch.equal(other.test, mnist5k.test)
    assert other.test_labels.bincount().tolist() == [50] * 10


def test_fixed_test_binarization_is_bernoulli_of_the_intensities(mnist5k):
    b = mnist5k.test_binary
    assert set(b.unique().tolist()) == {0.0, 1.0}
    assert b[mnist5k.test == 0].sum() == 0 and b[mnist5k.test == 1].min() == 1
    # E[b] = x: the mean over 392,000 pixels is within 4 standard errors of the mean intensity
    x = mnist5k.test
    se = (x * (1 - x)).sum().sqrt() / x.numel()
    assert abs(b.mean() - x.mean()) < 4 * se


def test_digits_are_8x8_scaled_and_stratified():
    d = load_dataset("digits")
    assert d.train.shape == (1497, 1, 8, 8) and d.test.shape == (300, 1, 8, 8)
    assert d.train.max() == 1.0 and d.train.min() == 0.0
    counts = d.test_labels.bincount()
    assert counts.sum() == 300 and counts.min() >= 29 and counts.max() <= 31


def test_batches_cover_the_split_once_and_shuffle_by_generator():
    d = load_dataset("digits")
    out = list(batches(d, "train", 100, shuffle=True, generator=torch.Generator().manual_seed(3)))
    assert len(out) == num_batches(1497, 100) == 15 and out[-1].shape == (97, 1, 8, 8)
    seen = torch.cat(out)
    # a permutation of the train images: the same multiset of rows, in another order
    assert not torch.equal(seen, d.train)
    assert torch.equal(seen.flatten(1).sum(0), d.train.flatten(1).sum(0))
    again = torch.cat(list(batches(d, "train", 100, shuffle=True,
                                   generator=torch.Generator().manual_seed(3))))
    assert torch.equal(seen, again)
    dropped = list(batches(d, "train", 100, drop_last=True))
    assert len(dropped) == num_batches(1497, 100, drop_last=True) == 14
    assert torch.equal(torch.cat(list(batches(d, "test", 64))), d.test)


def test_dynamic_binarization_draws_fresh_bernoulli_each_epoch(mnist5k):
    g = torch.Generator().manual_seed(0)
    epoch1 = torch.cat(list(batches(mnist5k, "train", 500, binarize="dynamic", generator=g)))
    epoch2 = torch.cat(list(batches(mnist5k, "train", 500, binarize="dynamic", generator=g)))
    x = mnist5k.train
    assert set(epoch1.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(epoch1, epoch2)
    # where the intensity is strictly between 0 and 1 the draws differ between epochs at the
    # rate 2x(1-x) on average
    grey = (x > 0) & (x < 1)
    expected = (2 * x[grey] * (1 - x[grey])).mean()
    assert abs((epoch1[grey] != epoch2[grey]).float().mean() - expected) < 0.01
    for e in (epoch1, epoch2):
        se = (x * (1 - x)).sum().sqrt() / x.numel()
        assert abs(e.mean() - x.mean()) < 4 * se
    # binarized test batches are the fixed binarization
    test = torch.cat(list(batches(mnist5k, "test", 128, binarize="dynamic", generator=g)))
    assert torch.equal(test, mnist5k.test_binary)


def test_sampler_gives_the_indices():
    d = load_dataset("digits")
    idx = [5, 0, 7, 7]
    (out,) = batches(d, "train", 10, sampler=idx)
    assert torch.equal(out, d.train[idx])


def test_labelled_batches_pair_each_image_with_its_label():
    d = load_dataset("digits")
    g = torch.Generator().manual_seed(4)
    out = list(batches(d, "train", 100, shuffle=True, generator=g, labels=True))
    order = torch.randperm(len(d.train), generator=torch.Generator().manual_seed(4))
    images = torch.cat([x for x, _ in out])
    labels = torch.cat([y for _, y in out])
    assert torch.equal(images, d.train[order]) and torch.equal(labels, d.train_labels[order])
    (x, y), *_ = batches(d, "test", 64, labels=True)
    assert torch.equal(x, d.test[:64]) and torch.equal(y, d.test_labels[:64])
    assert y.dtype == torch.int64


# ---- folders: fakes written here -------------------------------------------------------------

def write_idx(path, array, gz):
    raw = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(raw)


def fake_mnist(folder, gz, n_train=12, n_test=5):
    rng = np.random.default_rng(0)
    folder.mkdir(exist_ok=True)
    sfx = ".gz" if gz else ""
    files = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
             "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
             "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
             "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test)}
    for name, arr in files.items():
        write_idx(folder / f"{name}{sfx}", arr, gz)
    return files


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_loads_exact_pixels(tmp_path, gz):
    files = fake_mnist(tmp_path / "m", gz)
    d = load_dataset("fashion-mnist", root=tmp_path / "m")
    assert d.train.shape == (12, 1, 28, 28) and d.test.shape == (5, 1, 28, 28)
    expected = torch.tensor(files["train-images-idx3-ubyte"][:, None] / 255.0, dtype=torch.float32)
    assert torch.equal(d.train, expected)
    assert d.test_labels.tolist() == files["t10k-labels-idx1-ubyte"].tolist()


def one_line(excinfo):
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_missing_root_or_folder_names_the_expected_files(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset("mnist")
    assert "data.root" in one_line(e) and "train-images-idx3-ubyte" in one_line(e)
    with pytest.raises(DatasetError) as e:
        load_dataset("mnist", root=tmp_path / "nowhere")
    assert "nowhere" in one_line(e) and "t10k-labels-idx1-ubyte" in one_line(e)
    with pytest.raises(DatasetError) as e:
        load_dataset("cifar10", root=tmp_path / "nowhere")
    assert "data_batch_1" in one_line(e) and "test_batch" in one_line(e)
    with pytest.raises(DatasetError) as e:
        load_dataset("mnist6k")
    assert "valid datasets: mnist5k" in one_line(e)


def test_missing_and_malformed_idx_files_are_one_line(tmp_path):
    fake_mnist(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError) as e:
        load_dataset("mnist", root=tmp_path)
    assert "t10k-labels-idx1-ubyte[.gz] is missing" in one_line(e)

    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x09\x01garbage")
    with pytest.raises(DatasetError) as e:
        load_dataset("mnist", root=tmp_path)
    assert "bad magic number" in one_line(e)

    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4), gz=False)  # 4 labels, 5 images
    with pytest.raises(DatasetError) as e:
        load_dataset("mnist", root=tmp_path)
    assert "do not match" in one_line(e)

    raw = (tmp_path / "t10k-labels-idx1-ubyte").read_bytes()
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(raw[:-2])
    with pytest.raises(DatasetError) as e:
        load_dataset("mnist", root=tmp_path)
    assert "truncated" in one_line(e)

    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError) as e:
        load_dataset("mnist", root=tmp_path)
    assert "cannot read" in one_line(e)


def write_cifar(folder, n=4):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
                 b"labels": rng.integers(0, 10, n).tolist(), b"batch_label": b"x"}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)


def test_cifar_batches_load_and_refuse_code(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    d = load_dataset("cifar10", root=tmp_path)
    assert d.train.shape == (20, 3, 32, 32) and d.test.shape == (4, 3, 32, 32)
    assert d.image_shape == (3, 32, 32)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(DatasetError) as e:
        load_dataset("cifar10", root=tmp_path)
    assert "not a CIFAR-10 python batch" in one_line(e) and "not allowed" in one_line(e)
