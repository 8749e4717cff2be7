"""Load MNIST, Fashion-MNIST and CIFAR-10 as normalised tensors with a seeded validation split.

Data files are parsed only by torchvision's dataset classes, which also run torchvision's own
MD5 checks where it has them. Around them this module adds:

* data root resolution: the ``data_root`` argument, else ``$MRE_REPRO_DATA_ROOT``, else
  :func:`default_cache_root`.
* Fashion-MNIST from the Debian package ``dataset-fashion-mnist``, decompressed into
  torchvision's raw layout when the data root lacks the files.
* synthetic data sets in the real on-disk formats (:func:`write_synthetic_dataset`) for
  tests and quick runs, with a manifest of MD5s that the loader verifies.

Nothing here touches the network unless a caller passes ``download=True``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torchvision.datasets import CIFAR10, MNIST, FashionMNIST
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.datasets.utils import check_integrity

__all__ = [
    "DATASETS",
    "DEBIAN_FASHION_MNIST",
    "ENV_DATA_ROOT",
    "SYNTHETIC_MANIFEST",
    "DataCorruptError",
    "DataNotFoundError",
    "DataSplits",
    "default_cache_root",
    "load_splits",
    "split_indices",
    "write_synthetic_dataset",
]

DATASETS = ("mnist", "fashion-mnist", "cifar10")
ENV_DATA_ROOT = "MRE_REPRO_DATA_ROOT"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SYNTHETIC_MANIFEST = "mre-repro-synthetic.json"

_CHUNK_BYTES = 1 << 20
_FINGERPRINT_VERSION = 1
_SYNTHETIC_NOISE_STD = 48.0  # pixel levels; class templates are uniform in [0, 255]
# Share of synthetic images whose template is mixed with another class's, with
# a weight of 0.3 to 0.55 on the other class: the hard samples of the data set.
_SYNTHETIC_BLEND_SHARE = 0.2
_CIFAR10_LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# Errors that torchvision's readers raise on truncated or altered files. torchvision's IDX
# reader uses assert statements, and CIFAR10 raises RuntimeError on an MD5 mismatch.
_READ_ERRORS = (
    RuntimeError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    ImportError,
    AssertionError,
    EOFError,
    pickle.UnpicklingError,
)


class DataNotFoundError(RuntimeError):
    """A data set's files are missing from every place the loader looked."""


class DataCorruptError(RuntimeError):
    """A data set's files are present but truncated, altered or unreadable."""


@dataclass(frozen=True, eq=False)
class DataSplits:
    """One data set as tensors, split into training, validation and test parts.

    Images are float32 of shape (n, C, H, W), computed as ``(pixel / 255 - mean_c) / std_c``
    with the per-channel mean and std of the returned training part. Labels are int64 class
    indices in [0, num_classes). All tensors are on the device passed to :func:`load_splits`.
    ``eq=False`` keeps identity comparison, because tensors have no single truth value.

    Attributes:
        root: Data root handed to torchvision, which contains the data set's folder.
        files: File name to MD5 of the uncompressed bytes read, for every file read.
        fingerprint: SHA-256 hex digest of the data set name, ``files`` and the split settings.
    """

    dataset: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, int, int]
    root: Path
    files: dict[str, str]
    fingerprint: str


@dataclass(frozen=True)
class _DatasetSpec:
    """Location and contents of one data set's files in torchvision's layout."""

    name: str
    title: str
    torchvision_class: type
    folder: str
    file_names: tuple[str, ...]
    input_shape: tuple[int, int, int]
    num_classes: int

    @property
    def is_idx(self) -> bool:
        return self.torchvision_class is not CIFAR10


def _idx_spec(name: str, title: str, torchvision_class: type[MNIST]) -> _DatasetSpec:
    """Describe an MNIST-family data set from torchvision's own resource list."""
    file_names = tuple(os.path.splitext(archive)[0] for archive, _ in torchvision_class.resources)
    folder = f"{torchvision_class.__name__}/raw"
    num_classes = len(torchvision_class.classes)
    return _DatasetSpec(name, title, torchvision_class, folder, file_names, (1, 28, 28), num_classes)


_CIFAR10_FILES = tuple(name for name, _ in CIFAR10.train_list + CIFAR10.test_list)
_SPECS = {
    "mnist": _idx_spec("mnist", "MNIST", MNIST),
    "fashion-mnist": _idx_spec("fashion-mnist", "Fashion-MNIST", FashionMNIST),
    "cifar10": _DatasetSpec(
        "cifar10",
        "CIFAR-10",
        CIFAR10,
        CIFAR10.base_folder,
        _CIFAR10_FILES + (CIFAR10.meta["filename"],),
        (3, 32, 32),
        len(_CIFAR10_LABEL_NAMES),
    ),
}


def _spec_for(dataset: str) -> _DatasetSpec:
    if dataset not in _SPECS:
        raise ValueError(f"invalid data set {dataset!r}: valid choices are {', '.join(DATASETS)}")
    return _SPECS[dataset]


# --- Data root resolution -----------------------------------------------------------------


def default_cache_root() -> Path:
    """Return ``$XDG_CACHE_HOME/mre-repro/data``, or ``~/.cache/mre-repro/data`` if unset.

    A relative XDG_CACHE_HOME is ignored, as the XDG Base Directory specification requires.
    """
    cache_home = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(cache_home) if os.path.isabs(cache_home) else Path.home() / ".cache"
    return base / "mre-repro" / "data"


def _resolve_root(data_root: str | Path | None) -> tuple[Path, str]:
    """Return the data root and a phrase naming where it came from, for messages."""
    if data_root is not None:
        return Path(data_root).expanduser(), "data root from the data_root argument"
    from_env = os.environ.get(ENV_DATA_ROOT, "")
    if from_env:
        return Path(from_env).expanduser(), f"data root from ${ENV_DATA_ROOT}"
    return default_cache_root(), "default cache root"


def _missing_files(spec: _DatasetSpec, root: Path) -> list[str]:
    folder = root / spec.folder
    return [name for name in spec.file_names if not (folder / name).is_file()]


def _ways_to_provide(spec: _DatasetSpec) -> list[str]:
    ways = [
        f"pass --data-root DIR (data_root=DIR in Python) or set {ENV_DATA_ROOT}=DIR, "
        f"where DIR/{spec.folder}/ holds the files in torchvision's layout",
        "pass --download (download=True in Python) to let torchvision download them (needs internet access)",
    ]
    if spec.name == "fashion-mnist":
        ways.append(
            "on Debian or Ubuntu, run `sudo apt-get install dataset-fashion-mnist`, "
            f"and the loader then decompresses {DEBIAN_FASHION_MNIST} into the data root"
        )
    return ways


def _not_found_message(spec: _DatasetSpec, root: Path, root_source: str, missing: list[str]) -> str:
    places = [f"{root / spec.folder} ({root_source}): missing {', '.join(missing)}"]
    if spec.name == "fashion-mnist":
        missing_archives = ", ".join(path.name for path in _missing_debian_archives())
        places.append(f"{DEBIAN_FASHION_MNIST} (Debian package dataset-fashion-mnist): missing {missing_archives}")
    lines = [f"{spec.title} data set not found. Places tried:"]
    lines += [f"  - {place}" for place in places]
    lines.append("Provide it in one of these ways:")
    lines += [f"  - {way}" for way in _ways_to_provide(spec)]
    return "\n".join(lines)


def _corrupt_error(spec: _DatasetSpec, folder: Path, names: Sequence[str], problem: str) -> DataCorruptError:
    paths = ", ".join(str(folder / name) for name in names)
    lines = [
        f"{spec.title} data in {folder} is corrupt: {problem}. Files: {paths}.",
        f"Delete the files listed (or the whole folder {folder}) and provide the data again in one of these ways:",
    ]
    lines += [f"  - {way}" for way in _ways_to_provide(spec)]
    if (folder / SYNTHETIC_MANIFEST).is_file():
        lines.append(f"  - for a synthetic set, call mre_repro.data.write_synthetic_dataset({spec.name!r}, ...) again")
    return DataCorruptError("\n".join(lines))


# --- Arranging files: Debian Fashion-MNIST and downloads ----------------------------------


def _missing_debian_archives() -> list[Path]:
    """Return the Fashion-MNIST archives that DEBIAN_FASHION_MNIST lacks, an empty list when all exist."""
    archives = [DEBIAN_FASHION_MNIST / archive for archive, _ in FashionMNIST.resources]
    return [path for path in archives if not path.is_file()]


def _write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Create ``path`` from what ``write`` writes into a binary file, never leaving a half file.

    The bytes go to a temporary file in the same folder, which os.replace then moves onto
    ``path``. On any error the temporary file is removed and the error propagates.
    """
    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(descriptor, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _arrange_debian_fashion_mnist(root: Path, missing: list[str]) -> None:
    """Decompress the Debian archives of the ``missing`` files into ``root/FashionMNIST/raw``.

    Raises DataNotFoundError when that folder cannot be created or written, and
    DataCorruptError when an archive is truncated or not gzip data.
    """
    spec = _SPECS["fashion-mnist"]
    folder = root / spec.folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        raise DataNotFoundError(
            f"Found Fashion-MNIST in {DEBIAN_FASHION_MNIST} but cannot write it into {folder}: {err}. "
            f"Pass --data-root DIR (or set {ENV_DATA_ROOT}=DIR) with a writable folder DIR."
        ) from err

    for name in missing:
        archive = DEBIAN_FASHION_MNIST / f"{name}.gz"
        try:
            with gzip.open(archive, "rb") as source:
                _write_atomic(folder / name, lambda out: shutil.copyfileobj(source, out, _CHUNK_BYTES))
        except (EOFError, gzip.BadGzipFile, zlib.error) as err:
            raise DataCorruptError(
                f"Cannot decompress {archive}: {err}. "
                "Reinstall it with `sudo apt-get install --reinstall dataset-fashion-mnist`."
            ) from err


def _download(spec: _DatasetSpec, root: Path) -> None:
    """Let torchvision download and unpack the data set into ``root``.

    Raises DataNotFoundError carrying torchvision's error when that fails.
    """
    try:
        spec.torchvision_class(str(root), train=True, download=True)
    except (OSError, *_READ_ERRORS) as err:
        raise DataNotFoundError(
            f"Downloading {spec.title} into {root} failed: {err}\n"
            f"Check the internet connection, or provide the files offline with --data-root DIR "
            f"(or {ENV_DATA_ROOT}=DIR) where DIR/{spec.folder}/ holds them in torchvision's layout."
        ) from err


def _ensure_files(spec: _DatasetSpec, root: Path, root_source: str, download: bool) -> None:
    """Make sure every file of the data set exists under ``root`` in torchvision's layout.

    Missing files come from the Debian package (Fashion-MNIST only), else from a
    torchvision download when ``download`` is true. Otherwise raises DataNotFoundError.
    """
    missing = _missing_files(spec, root)
    if not missing:
        return
    if spec.name == "fashion-mnist" and not _missing_debian_archives():
        _arrange_debian_fashion_mnist(root, missing)
    elif download:
        _download(spec, root)
    else:
        raise DataNotFoundError(_not_found_message(spec, root, root_source, missing))


# --- Loading through torchvision -----------------------------------------------------------


def _md5_of_file(path: Path) -> str:
    """Return the MD5 hex digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _read_manifest(spec: _DatasetSpec, folder: Path) -> dict[str, str] | None:
    """Return the MD5s that write_synthetic_dataset recorded in ``folder``, or None for real data."""
    path = folder / SYNTHETIC_MANIFEST
    if not path.is_file():
        return None
    try:
        md5s = json.loads(path.read_text(encoding="utf-8"))["md5"]
        missing = [name for name in spec.file_names if not isinstance(md5s.get(name), str)]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise _corrupt_error(spec, folder, [SYNTHETIC_MANIFEST], f"unreadable manifest ({err!r})") from err
    if missing:
        raise _corrupt_error(spec, folder, [SYNTHETIC_MANIFEST], f"manifest lacks the MD5 of {', '.join(missing)}")
    return {name: md5s[name] for name in spec.file_names}


def _split_file_names(spec: _DatasetSpec, train: bool) -> list[str]:
    prefix = "train-" if train else "t10k-"
    return [name for name in spec.file_names if name.startswith(prefix)]


def _unreadable_idx_files(folder: Path, names: Sequence[str]) -> list[str]:
    """Return the IDX files among ``names`` that torchvision's own readers reject."""
    unreadable = []
    for name in names:
        reader = read_image_file if "-images-" in name else read_label_file
        try:
            reader(str(folder / name))
        except _READ_ERRORS:
            unreadable.append(name)
    return unreadable


def _read_idx_split(spec: _DatasetSpec, root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one split with torchvision's MNIST-family class as uint8 (n, 1, 28, 28) and int64 labels."""
    # NOTE: torchvision prefers legacy processed/training.pt and processed/test.pt over the raw
    # files when both exist; `files` and the fingerprint still describe the raw files.
    try:
        dataset = spec.torchvision_class(str(root), train=train, download=False)
    except _READ_ERRORS as err:
        folder = root / spec.folder
        names = _split_file_names(spec, train)
        unreadable = _unreadable_idx_files(folder, names) or names
        raise _corrupt_error(spec, folder, unreadable, f"torchvision cannot read the IDX data ({err!r})") from err
    return dataset.data.unsqueeze(1), dataset.targets.to(torch.int64)


def _torchvision_cifar10_md5s() -> dict[str, str]:
    md5s = {name: md5 for name, md5 in CIFAR10.train_list + CIFAR10.test_list}
    md5s[CIFAR10.meta["filename"]] = CIFAR10.meta["md5"]
    return md5s


class _ManifestCIFAR10(CIFAR10):
    """CIFAR10 whose integrity check compares against given MD5s instead of torchvision's list.

    Synthetic CIFAR-10 files differ from the real ones, so their MD5s come from the manifest
    that write_synthetic_dataset wrote. torchvision's own check_integrity still runs against them.
    """

    def __init__(self, root: str, md5s: dict[str, str], *, train: bool) -> None:
        self.train_list = [[name, md5s[name]] for name, _ in CIFAR10.train_list]
        self.test_list = [[name, md5s[name]] for name, _ in CIFAR10.test_list]
        self.meta = {**CIFAR10.meta, "md5": md5s[CIFAR10.meta["filename"]]}
        super().__init__(root, train=train, download=False)


def _read_cifar_split(
    spec: _DatasetSpec, root: Path, md5s: dict[str, str] | None, train: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one CIFAR-10 split with torchvision as uint8 (n, 3, 32, 32) and int64 labels."""
    folder = root / spec.folder
    try:
        if md5s is None:
            dataset = CIFAR10(str(root), train=train, download=False)
        else:
            dataset = _ManifestCIFAR10(str(root), md5s, train=train)
    except _READ_ERRORS as err:
        expected = md5s if md5s is not None else _torchvision_cifar10_md5s()
        mismatched = [name for name, md5 in expected.items() if not check_integrity(str(folder / name), md5)]
        if mismatched:
            raise _corrupt_error(spec, folder, mismatched, "MD5 does not match the expected value") from err
        raise _corrupt_error(spec, folder, spec.file_names, f"torchvision cannot read the batches ({err!r})") from err
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(dataset.targets, dtype=torch.int64)


def _check_split(spec: _DatasetSpec, folder: Path, split: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Raise DataCorruptError unless the images and labels of one split fit the data set."""
    problem = None
    if tuple(images.shape[1:]) != spec.input_shape:
        problem = f"{split} images have shape {tuple(images.shape[1:])}, expected {spec.input_shape}"
    elif len(images) != len(labels):
        problem = f"{split} split has {len(images)} images but {len(labels)} labels"
    elif len(labels) and not (0 <= int(labels.min()) and int(labels.max()) < spec.num_classes):
        problem = f"{split} labels span [{int(labels.min())}, {int(labels.max())}], expected [0, {spec.num_classes - 1}]"
    if problem is not None:
        raise _corrupt_error(spec, folder, spec.file_names, problem)


def _read_dataset(spec: _DatasetSpec, root: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Read and check both splits on the CPU: uint8 train images, train labels, test images, test labels."""
    folder = root / spec.folder
    md5s = _read_manifest(spec, folder)
    if spec.is_idx and md5s is not None:
        mismatched = [name for name, md5 in md5s.items() if not check_integrity(str(folder / name), md5)]
        if mismatched:
            raise _corrupt_error(spec, folder, mismatched, f"MD5 does not match {SYNTHETIC_MANIFEST}")

    splits = []
    for train, split in ((True, "training"), (False, "test")):
        if spec.is_idx:
            images, labels = _read_idx_split(spec, root, train)
        else:
            images, labels = _read_cifar_split(spec, root, md5s, train)
        _check_split(spec, folder, split, images, labels)
        splits += [images, labels]
    train_x, train_y, test_x, test_y = splits
    return train_x, train_y, test_x, test_y


# --- Splitting and normalising -------------------------------------------------------------


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n)`` into training and validation indices with a seeded permutation.

    The first ``round(val_fraction * n)`` entries of ``torch.randperm(n)``, drawn from a CPU
    torch.Generator seeded with ``seed``, are the validation indices and the rest are the
    training indices, both in permuted order as int64 CPU tensors. Raises ValueError when
    either part would be empty.
    """
    n_val = round(val_fraction * n)
    if not 0 < n_val < n:
        raise ValueError(
            f"val_fraction={val_fraction!r} of {n} training examples gives {n_val} for validation. "
            f"Choose a value that leaves at least one example in both parts."
        )
    generator = torch.Generator().manual_seed(seed)
    permutation = torch.randperm(n, generator=generator)
    return permutation[n_val:], permutation[:n_val]


def _normalise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Convert uint8 images to float32 standardised per channel with the statistics of ``train``.

    Each output is ``(pixel / 255 - mean_c) / std_c``, where mean and population std of
    channel c are taken over every pixel of ``train``. Raises DataCorruptError when a channel
    of ``train`` is constant, since it cannot be standardised.
    """
    train_float = train.float().div_(255)
    std, mean = torch.std_mean(train_float, dim=(0, 2, 3), correction=0, keepdim=True)
    if bool((std == 0).any()):
        raise DataCorruptError(
            f"Cannot standardise the training images because a channel is constant "
            f"(per-channel mean {mean.flatten().tolist()}, std {std.flatten().tolist()}). "
            f"Check that the data files contain real images."
        )
    outputs = [train_float.sub_(mean).div_(std)]
    outputs += [images.float().div_(255).sub_(mean).div_(std) for images in others]
    return outputs


def _fingerprint(dataset: str, files: dict[str, str], settings: dict[str, object]) -> str:
    record = {"version": _FINGERPRINT_VERSION, "dataset": dataset, "files": sorted(files.items()), **settings}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode("utf-8")).hexdigest()


def _check_arguments(val_fraction: float, train_limit: int | None, test_limit: int | None) -> None:
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be a number strictly between 0 and 1, got {val_fraction!r}")
    for name, limit in (("train_limit", train_limit), ("test_limit", test_limit)):
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"{name} must be None or an integer of at least 1, got {limit!r}")


def load_splits(
    dataset: str,
    *,
    data_root: str | Path | None = None,
    download: bool = False,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    device: str | torch.device = "cpu",
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> DataSplits:
    """Load a data set into normalised tensors on ``device`` with a seeded validation split.

    The validation part is taken out of the training set by :func:`split_indices`.
    ``train_limit`` keeps the first k examples of the permuted training part and
    ``test_limit`` the first k of the test set. A limit above the size keeps everything.
    Normalisation statistics come from the training part as returned, after both cuts.
    The data root is ``data_root``, else ``$MRE_REPRO_DATA_ROOT``, else
    :func:`default_cache_root`. Raises ValueError for invalid arguments, DataNotFoundError
    when the files cannot be found or arranged, DataCorruptError when they cannot be read.
    """
    spec = _spec_for(dataset)
    _check_arguments(val_fraction, train_limit, test_limit)
    root, root_source = _resolve_root(data_root)
    _ensure_files(spec, root, root_source, download)

    full_train_x, full_train_y, test_x, test_y = _read_dataset(spec, root)
    files = {name: _md5_of_file(root / spec.folder / name) for name in spec.file_names}
    train_idx, val_idx = split_indices(len(full_train_y), val_fraction, split_seed)
    train_idx = train_idx[:train_limit]
    test_x, test_y = test_x[:test_limit], test_y[:test_limit]

    device = torch.device(device)
    train_x, val_x, test_x = _normalise(
        full_train_x[train_idx].to(device), full_train_x[val_idx].to(device), test_x.to(device)
    )
    settings = {"val_fraction": val_fraction, "split_seed": split_seed, "train_limit": train_limit, "test_limit": test_limit}
    return DataSplits(
        dataset=dataset,
        train_x=train_x,
        train_y=full_train_y[train_idx].to(device),
        val_x=val_x,
        val_y=full_train_y[val_idx].to(device),
        test_x=test_x,
        test_y=test_y.to(device),
        num_classes=spec.num_classes,
        input_shape=spec.input_shape,
        root=root,
        files=files,
        fingerprint=_fingerprint(dataset, files, settings),
    )


# --- Synthetic data sets -------------------------------------------------------------------


def _synthetic_images(rng: np.random.Generator, templates: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` uint8 images of shape (C, H, W) and uint8 labels, balanced over the classes.

    A share of the images blends the class template with another class's, so
    the data has hard, sometimes ambiguous samples and no model reaches 100%.
    """
    labels = rng.permutation(np.arange(n) % len(templates)).astype(np.uint8)
    other = (labels + rng.integers(1, len(templates), size=n)) % len(templates)
    blend = np.where(rng.random(n) < _SYNTHETIC_BLEND_SHARE, rng.uniform(0.3, 0.55, size=n), 0.0)
    blend = blend.reshape(n, *([1] * (templates.ndim - 1)))
    clean = (1.0 - blend) * templates[labels] + blend * templates[other]
    noise = rng.normal(0.0, _SYNTHETIC_NOISE_STD, size=(n, *templates.shape[1:]))
    images = np.clip(np.rint(clean + noise), 0, 255).astype(np.uint8)
    return images, labels


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """Encode a uint8 array as IDX: big-endian uint32 magic number and sizes, then the data."""
    header = np.array([magic, *array.shape], dtype=">u4")
    return header.tobytes() + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _write_idx_files(folder: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> None:
    for prefix, (images, labels) in (("train", train), ("t10k", test)):
        image_bytes = _idx_bytes(images[:, 0], magic=2051)
        label_bytes = _idx_bytes(labels, magic=2049)
        _write_atomic(folder / f"{prefix}-images-idx3-ubyte", lambda out: out.write(image_bytes))
        _write_atomic(folder / f"{prefix}-labels-idx1-ubyte", lambda out: out.write(label_bytes))


def _write_pickle(path: Path, record: dict[str, object]) -> None:
    """Pickle with protocol 2, the protocol of the original Python 2 CIFAR-10 files."""
    _write_atomic(path, lambda out: pickle.dump(record, out, protocol=2))


def _cifar_batch(images: np.ndarray, labels: np.ndarray, batch_label: str) -> dict[str, object]:
    """Build a batch dict as torchvision reads it: str keys, ``data`` uint8 (n, 3072) in CHW order."""
    return {
        "batch_label": batch_label,
        "labels": labels.astype(int).tolist(),
        "data": images.reshape(len(images), -1),
        "filenames": [f"synthetic_{i:05d}.png" for i in range(len(images))],
    }


def _write_cifar_files(folder: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = train
    batch_count = len(CIFAR10.train_list)
    parts = np.array_split(np.arange(len(images)), batch_count)
    for number, ((name, _), part) in enumerate(zip(CIFAR10.train_list, parts), start=1):
        batch = _cifar_batch(images[part], labels[part], f"training batch {number} of {batch_count}")
        _write_pickle(folder / name, batch)
    _write_pickle(folder / CIFAR10.test_list[0][0], _cifar_batch(*test, "testing batch 1 of 1"))
    meta = {"label_names": list(_CIFAR10_LABEL_NAMES), "num_cases_per_batch": len(parts[0]), "num_vis": 3072}
    _write_pickle(folder / CIFAR10.meta["filename"], meta)


def write_synthetic_dataset(dataset: str, root: str | Path, *, n_train: int, n_test: int, seed: int) -> Path:
    """Write a small learnable data set in the real on-disk format of ``dataset`` and return ``root``.

    Each class has a fixed random uint8 template, and each image is its class template (for a
    fifth of the images blended with another class's) plus Gaussian noise (std 48 pixel
    levels), rounded and clipped to [0, 255]. Labels are balanced
    over the 10 classes and shuffled. The layout is torchvision's: uncompressed IDX files in
    ``root/MNIST/raw`` or ``root/FashionMNIST/raw``, CIFAR-10 pickles in
    ``root/cifar-10-batches-py``. The manifest ``mre-repro-synthetic.json`` beside them
    records every file's MD5 for :func:`load_splits` to verify. The same arguments always
    give the same bytes. Existing files of the data set are replaced.
    """
    spec = _spec_for(dataset)
    for name, count in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"{name} must be an integer of at least 1, got {count!r}")

    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, size=(spec.num_classes, *spec.input_shape)).astype(np.float64)
    train = _synthetic_images(rng, templates, n_train)
    test = _synthetic_images(rng, templates, n_test)

    folder = Path(root) / spec.folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SYNTHETIC_MANIFEST).unlink(missing_ok=True)
    if spec.is_idx:
        _write_idx_files(folder, train, test)
    else:
        _write_cifar_files(folder, train, test)

    manifest = {"dataset": dataset, "seed": seed, "n_train": n_train, "n_test": n_test}
    manifest["md5"] = {name: _md5_of_file(folder / name) for name in spec.file_names}
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")
    _write_atomic(folder / SYNTHETIC_MANIFEST, lambda out: out.write(manifest_bytes))
    return Path(root)
