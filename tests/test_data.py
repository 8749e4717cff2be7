"""Tests for mre_repro.data: loading, splitting, Debian arrangement and error messages.

Every test runs offline. The autouse fixture points the cache, the environment variable
and the Debian folder at temporary paths and makes any network connection fail.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import socket
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mre_repro import data

REAL_DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
N_TRAIN = 200
N_TEST = 50

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR_FILES = (
    "data_batch_1",
    "data_batch_2",
    "data_batch_3",
    "data_batch_4",
    "data_batch_5",
    "test_batch",
    "batches.meta",
)
EXPECTED = {
    "mnist": ("MNIST/raw", IDX_FILES, (1, 28, 28)),
    "fashion-mnist": ("FashionMNIST/raw", IDX_FILES, (1, 28, 28)),
    "cifar10": ("cifar-10-batches-py", CIFAR_FILES, (3, 32, 32)),
}


class NetworkBlocked(OSError):
    pass


@pytest.fixture(autouse=True)
def offline_and_isolated(tmp_path, monkeypatch):
    """Keep every test off the network, the user's cache and the real Debian folder."""

    def refuse(*args, **kwargs):
        raise NetworkBlocked("tests must not open network connections")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv(data.ENV_DATA_ROOT, raising=False)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-package")


@pytest.fixture(scope="module")
def synthetic_roots(tmp_path_factory):
    """One pristine synthetic root per data set; tests copy it before changing files."""
    roots = {}
    for dataset in data.DATASETS:
        root = tmp_path_factory.mktemp(f"synthetic-{dataset}")
        roots[dataset] = data.write_synthetic_dataset(dataset, root, n_train=N_TRAIN, n_test=N_TEST, seed=7)
    return roots


def copy_root(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination


def md5_hex(payload: bytes) -> str:
    return hashlib.md5(payload).hexdigest()


# --- Round trip on synthetic data ------------------------------------------------------------


@pytest.mark.parametrize("dataset", data.DATASETS)
def test_synthetic_round_trip(dataset, synthetic_roots):
    folder, file_names, input_shape = EXPECTED[dataset]
    splits = data.load_splits(dataset, data_root=synthetic_roots[dataset])

    n_val = round(0.1 * N_TRAIN)
    assert splits.dataset == dataset
    assert splits.num_classes == 10
    assert splits.input_shape == input_shape
    assert splits.root == synthetic_roots[dataset]
    assert splits.train_x.shape == (N_TRAIN - n_val, *input_shape)
    assert splits.val_x.shape == (n_val, *input_shape)
    assert splits.test_x.shape == (N_TEST, *input_shape)
    assert splits.train_y.shape == (N_TRAIN - n_val,)
    assert splits.val_y.shape == (n_val,)
    assert splits.test_y.shape == (N_TEST,)
    for images in (splits.train_x, splits.val_x, splits.test_x):
        assert images.dtype == torch.float32
        assert images.device.type == "cpu"
    for labels in (splits.train_y, splits.val_y, splits.test_y):
        assert labels.dtype == torch.int64
        assert int(labels.min()) >= 0
        assert int(labels.max()) < 10

    channel_mean = splits.train_x.mean(dim=(0, 2, 3))
    channel_std = splits.train_x.std(dim=(0, 2, 3), correction=0)
    assert torch.allclose(channel_mean, torch.zeros_like(channel_mean), atol=1e-4)
    assert torch.allclose(channel_std, torch.ones_like(channel_std), atol=1e-4)

    on_disk = synthetic_roots[dataset] / folder
    assert splits.files == {name: md5_hex((on_disk / name).read_bytes()) for name in file_names}
    assert len(splits.fingerprint) == 64


@pytest.mark.parametrize("dataset", data.DATASETS)
def test_split_seed_controls_split(dataset, synthetic_roots):
    root = synthetic_roots[dataset]
    first = data.load_splits(dataset, data_root=root, split_seed=3)
    again = data.load_splits(dataset, data_root=root, split_seed=3)
    other = data.load_splits(dataset, data_root=root, split_seed=4)

    assert torch.equal(first.val_x, again.val_x)
    assert torch.equal(first.train_y, again.train_y)
    assert first.fingerprint == again.fingerprint
    assert not torch.equal(first.val_x, other.val_x)
    assert first.fingerprint != other.fingerprint
    assert first.files == other.files


def test_limits_take_leading_examples(synthetic_roots):
    root = synthetic_roots["mnist"]
    full = data.load_splits("mnist", data_root=root)
    limited = data.load_splits("mnist", data_root=root, train_limit=10, test_limit=5)

    assert limited.train_x.shape[0] == 10
    assert limited.test_x.shape[0] == 5
    assert torch.equal(limited.train_y, full.train_y[:10])
    assert torch.equal(limited.test_y, full.test_y[:5])
    assert torch.equal(limited.val_y, full.val_y)
    assert limited.fingerprint != full.fingerprint


def test_limit_above_size_keeps_all(synthetic_roots):
    splits = data.load_splits("mnist", data_root=synthetic_roots["mnist"], train_limit=10**6, test_limit=10**6)
    assert splits.train_x.shape[0] == N_TRAIN - round(0.1 * N_TRAIN)
    assert splits.test_x.shape[0] == N_TEST


def test_synthetic_writer_is_deterministic(tmp_path):
    first = data.write_synthetic_dataset("cifar10", tmp_path / "a", n_train=30, n_test=10, seed=5)
    second = data.write_synthetic_dataset("cifar10", tmp_path / "b", n_train=30, n_test=10, seed=5)
    for name in CIFAR_FILES:
        first_bytes = (first / "cifar-10-batches-py" / name).read_bytes()
        second_bytes = (second / "cifar-10-batches-py" / name).read_bytes()
        assert first_bytes == second_bytes, name


def test_synthetic_manifest_records_md5s(synthetic_roots):
    folder = synthetic_roots["fashion-mnist"] / "FashionMNIST" / "raw"
    manifest = json.loads((folder / data.SYNTHETIC_MANIFEST).read_text())
    assert manifest["md5"] == {name: md5_hex((folder / name).read_bytes()) for name in IDX_FILES}


# --- Data root resolution --------------------------------------------------------------------


def test_default_cache_root_uses_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data.default_cache_root() == tmp_path / "cache" / "mre-repro" / "data"


def test_default_cache_root_without_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.default_cache_root() == tmp_path / "home" / ".cache" / "mre-repro" / "data"


def test_default_cache_root_ignores_relative_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.default_cache_root() == tmp_path / "home" / ".cache" / "mre-repro" / "data"


def test_env_var_sets_root(synthetic_roots, monkeypatch):
    monkeypatch.setenv(data.ENV_DATA_ROOT, str(synthetic_roots["mnist"]))
    splits = data.load_splits("mnist")
    assert splits.root == synthetic_roots["mnist"]


def test_argument_overrides_env_var(synthetic_roots, tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_DATA_ROOT, str(tmp_path / "empty"))
    splits = data.load_splits("mnist", data_root=synthetic_roots["mnist"])
    assert splits.root == synthetic_roots["mnist"]


def test_default_cache_root_is_used(synthetic_roots):
    copy_root(synthetic_roots["cifar10"], data.default_cache_root())
    splits = data.load_splits("cifar10")
    assert splits.root == data.default_cache_root()


def test_download_skipped_when_files_present(synthetic_roots):
    for dataset in ("mnist", "cifar10"):
        splits = data.load_splits(dataset, data_root=synthetic_roots[dataset], download=True)
        assert splits.test_x.shape[0] == N_TEST


# --- Missing data ----------------------------------------------------------------------------


def test_missing_fashion_mnist_message(tmp_path):
    root = tmp_path / "empty-root"
    with pytest.raises(data.DataNotFoundError) as caught:
        data.load_splits("fashion-mnist", data_root=root)

    message = str(caught.value)
    assert "Fashion-MNIST" in message
    assert str(root / "FashionMNIST" / "raw") in message
    assert str(data.DEBIAN_FASHION_MNIST) in message
    assert "--data-root" in message
    assert data.ENV_DATA_ROOT in message
    assert "--download" in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_missing_cifar10_message(tmp_path):
    root = tmp_path / "empty-root"
    with pytest.raises(data.DataNotFoundError) as caught:
        data.load_splits("cifar10", data_root=root)

    message = str(caught.value)
    assert "CIFAR-10" in message
    assert str(root / "cifar-10-batches-py") in message
    assert "--data-root" in message
    assert "--download" in message
    assert "apt-get" not in message


def test_missing_default_root_named(tmp_path):
    with pytest.raises(data.DataNotFoundError) as caught:
        data.load_splits("mnist")
    assert str(data.default_cache_root() / "MNIST" / "raw") in str(caught.value)


def test_partly_missing_files_named(synthetic_roots, tmp_path):
    root = copy_root(synthetic_roots["mnist"], tmp_path / "root")
    (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(data.DataNotFoundError, match="missing t10k-labels-idx1-ubyte"):
        data.load_splits("mnist", data_root=root)


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_failed_download_raises_not_found(dataset, tmp_path):
    with pytest.raises(data.DataNotFoundError, match="Downloading") as caught:
        data.load_splits(dataset, data_root=tmp_path / "root", download=True)
    assert "--data-root" in str(caught.value)


# --- Corrupt data ----------------------------------------------------------------------------


def truncate(path: Path, keep_bytes: int) -> None:
    path.write_bytes(path.read_bytes()[:keep_bytes])


def test_truncated_idx_fails_manifest_md5(synthetic_roots, tmp_path):
    root = copy_root(synthetic_roots["mnist"], tmp_path / "root")
    damaged = root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    truncate(damaged, keep_bytes=1000)

    with pytest.raises(data.DataCorruptError) as caught:
        data.load_splits("mnist", data_root=root)
    message = str(caught.value)
    assert str(damaged) in message
    assert "Delete" in message
    assert str(root / "MNIST" / "raw" / "train-images-idx3-ubyte") not in message


@pytest.mark.parametrize("keep_bytes", [2, 10, 1000])
def test_truncated_idx_fails_torchvision_read(synthetic_roots, tmp_path, keep_bytes):
    root = copy_root(synthetic_roots["fashion-mnist"], tmp_path / "root")
    folder = root / "FashionMNIST" / "raw"
    (folder / data.SYNTHETIC_MANIFEST).unlink()
    damaged = folder / "train-images-idx3-ubyte"
    truncate(damaged, keep_bytes)

    with pytest.raises(data.DataCorruptError) as caught:
        data.load_splits("fashion-mnist", data_root=root)
    message = str(caught.value)
    assert str(damaged) in message
    assert str(folder / "train-labels-idx1-ubyte") not in message
    assert isinstance(caught.value.__cause__, Exception)


def test_label_out_of_range_is_corrupt(synthetic_roots, tmp_path):
    root = copy_root(synthetic_roots["mnist"], tmp_path / "root")
    folder = root / "MNIST" / "raw"
    (folder / data.SYNTHETIC_MANIFEST).unlink()
    labels = bytearray((folder / "t10k-labels-idx1-ubyte").read_bytes())
    labels[8] = 12
    (folder / "t10k-labels-idx1-ubyte").write_bytes(bytes(labels))

    with pytest.raises(data.DataCorruptError, match=r"test labels span \[0, 12\]"):
        data.load_splits("mnist", data_root=root)


def flip_bytes(path: Path, offset: int, count: int) -> None:
    payload = bytearray(path.read_bytes())
    for index in range(offset, offset + count):
        payload[index] ^= 0xFF
    path.write_bytes(bytes(payload))


def test_cifar_flipped_bytes_fail_md5(synthetic_roots, tmp_path):
    root = copy_root(synthetic_roots["cifar10"], tmp_path / "root")
    damaged = root / "cifar-10-batches-py" / "data_batch_3"
    flip_bytes(damaged, offset=200, count=16)

    with pytest.raises(data.DataCorruptError) as caught:
        data.load_splits("cifar10", data_root=root)
    message = str(caught.value)
    assert str(damaged) in message
    assert "MD5" in message
    assert "data_batch_1" not in message


def test_cifar_bad_pickle_is_corrupt(synthetic_roots, tmp_path):
    root = copy_root(synthetic_roots["cifar10"], tmp_path / "root")
    folder = root / "cifar-10-batches-py"
    damaged = folder / "test_batch"
    flip_bytes(damaged, offset=0, count=4)
    manifest_path = folder / data.SYNTHETIC_MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["md5"]["test_batch"] = md5_hex(damaged.read_bytes())
    manifest_path.write_text(json.dumps(manifest))

    with pytest.raises(data.DataCorruptError) as caught:
        data.load_splits("cifar10", data_root=root)
    assert str(folder) in str(caught.value)
    assert "cannot read" in str(caught.value)


def test_broken_manifest_is_corrupt(synthetic_roots, tmp_path):
    root = copy_root(synthetic_roots["cifar10"], tmp_path / "root")
    manifest_path = root / "cifar-10-batches-py" / data.SYNTHETIC_MANIFEST
    manifest_path.write_text("{not json")
    with pytest.raises(data.DataCorruptError, match=data.SYNTHETIC_MANIFEST):
        data.load_splits("cifar10", data_root=root)


def test_cifar_without_manifest_uses_torchvision_md5s(synthetic_roots, tmp_path):
    root = copy_root(synthetic_roots["cifar10"], tmp_path / "root")
    (root / "cifar-10-batches-py" / data.SYNTHETIC_MANIFEST).unlink()
    with pytest.raises(data.DataCorruptError, match="MD5 does not match"):
        data.load_splits("cifar10", data_root=root)


# --- Debian Fashion-MNIST --------------------------------------------------------------------


def make_fake_debian_folder(synthetic_root: Path, destination: Path) -> dict[str, str]:
    """Gzip the synthetic Fashion-MNIST files as the Debian package ships them; return their MD5s."""
    destination.mkdir()
    md5s = {}
    for name in IDX_FILES:
        payload = (synthetic_root / "FashionMNIST" / "raw" / name).read_bytes()
        (destination / f"{name}.gz").write_bytes(gzip.compress(payload))
        md5s[name] = md5_hex(payload)
    return md5s


def test_debian_files_arranged_and_loaded(synthetic_roots, tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    expected_md5s = make_fake_debian_folder(synthetic_roots["fashion-mnist"], debian)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", debian)
    root = tmp_path / "empty-root"

    splits = data.load_splits("fashion-mnist", data_root=root)

    raw = root / "FashionMNIST" / "raw"
    assert sorted(path.name for path in raw.iterdir()) == sorted(IDX_FILES)
    assert splits.files == expected_md5s
    assert splits.test_x.shape == (N_TEST, 1, 28, 28)
    reference = data.load_splits("fashion-mnist", data_root=synthetic_roots["fashion-mnist"])
    assert splits.fingerprint == reference.fingerprint
    assert torch.equal(splits.train_x, reference.train_x)


def test_debian_fills_only_missing_files(synthetic_roots, tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    make_fake_debian_folder(synthetic_roots["fashion-mnist"], debian)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", debian)
    root = copy_root(synthetic_roots["fashion-mnist"], tmp_path / "root")
    raw = root / "FashionMNIST" / "raw"
    (raw / "t10k-images-idx3-ubyte").unlink()
    kept_mtime = (raw / "train-images-idx3-ubyte").stat().st_mtime_ns

    data.load_splits("fashion-mnist", data_root=root)

    assert (raw / "t10k-images-idx3-ubyte").is_file()
    assert (raw / "train-images-idx3-ubyte").stat().st_mtime_ns == kept_mtime


def test_truncated_debian_archive_leaves_no_file(synthetic_roots, tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    make_fake_debian_folder(synthetic_roots["fashion-mnist"], debian)
    truncate(debian / "train-images-idx3-ubyte.gz", keep_bytes=300)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", debian)
    root = tmp_path / "root"

    with pytest.raises(data.DataCorruptError, match="train-images-idx3-ubyte.gz"):
        data.load_splits("fashion-mnist", data_root=root)
    raw = root / "FashionMNIST" / "raw"
    assert not (raw / "train-images-idx3-ubyte").exists()
    assert [path.name for path in raw.iterdir() if path.name.startswith(".")] == []


def test_unwritable_root_raises_not_found(synthetic_roots, tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    make_fake_debian_folder(synthetic_roots["fashion-mnist"], debian)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", debian)
    root_is_a_file = tmp_path / "root"
    root_is_a_file.write_text("not a folder")

    with pytest.raises(data.DataNotFoundError) as caught:
        data.load_splits("fashion-mnist", data_root=root_is_a_file)
    assert "cannot write" in str(caught.value)
    assert "--data-root" in str(caught.value)


@pytest.mark.realdata
def test_real_debian_fashion_mnist(tmp_path, monkeypatch):
    archives = [REAL_DEBIAN_FASHION_MNIST / f"{name}.gz" for name in IDX_FILES]
    if not all(path.is_file() for path in archives):
        pytest.skip(f"{REAL_DEBIAN_FASHION_MNIST} lacks the Debian package dataset-fashion-mnist")
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", REAL_DEBIAN_FASHION_MNIST)

    splits = data.load_splits("fashion-mnist", data_root=tmp_path / "root", val_fraction=0.1)

    assert splits.train_x.shape == (54000, 1, 28, 28)
    assert splits.val_x.shape == (6000, 1, 28, 28)
    assert splits.test_x.shape == (10000, 1, 28, 28)
    assert splits.num_classes == 10
    assert splits.test_y.bincount().tolist() == [1000] * 10
    expected_md5s = {}
    for archive in archives:
        with gzip.open(archive, "rb") as source:
            expected_md5s[archive.name.removesuffix(".gz")] = md5_hex(source.read())
    assert splits.files == expected_md5s


# --- Argument checks and the split property --------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"dataset": "svhn"}, "invalid data set 'svhn': valid choices are mnist, fashion-mnist, cifar10"),
        ({"val_fraction": 0.0}, "strictly between 0 and 1, got 0.0"),
        ({"val_fraction": 1.0}, "strictly between 0 and 1, got 1.0"),
        ({"val_fraction": -0.2}, "got -0.2"),
        ({"train_limit": 0}, "train_limit must be None or an integer of at least 1, got 0"),
        ({"test_limit": -3}, "test_limit must be None or an integer of at least 1, got -3"),
    ],
)
def test_invalid_arguments_rejected(kwargs, fragment, tmp_path):
    arguments = {"dataset": "mnist", "data_root": tmp_path, **kwargs}
    with pytest.raises(ValueError) as caught:
        data.load_splits(**arguments)
    assert fragment in str(caught.value)


def test_synthetic_writer_rejects_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match="n_train must be an integer of at least 1, got 0"):
        data.write_synthetic_dataset("mnist", tmp_path, n_train=0, n_test=5, seed=0)
    with pytest.raises(ValueError, match="valid choices"):
        data.write_synthetic_dataset("imagenet", tmp_path, n_train=5, n_test=5, seed=0)


def test_split_rejects_empty_part():
    with pytest.raises(ValueError, match="at least one example in both parts"):
        data.split_indices(4, 0.1, seed=0)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(min_value=20, max_value=3000),
    val_fraction=st.floats(min_value=0.05, max_value=0.5),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_split_indices_partition(n, val_fraction, seed):
    train_idx, val_idx = data.split_indices(n, val_fraction, seed)

    assert len(train_idx) + len(val_idx) == n
    assert len(val_idx) == round(val_fraction * n)
    assert set(train_idx.tolist()).isdisjoint(val_idx.tolist())
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(n))
