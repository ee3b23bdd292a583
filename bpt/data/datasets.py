"""Data sets as numpy arrays: images float32 (N, C, H, W), labels int64 (N,).

Every loader returns train / validation / test splits. The validation slice is small and
comes out of the training data; subnetworks score themselves on it for AGWU's accuracy
weight. The test split is held out and used only to report accuracy.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile

import numpy as np

from bpt.errors import ConfigError, DataError

from .base import (CHANNEL_COUNTS, CHANNEL_STATS_SAMPLE, MIN_SAMPLES, Dataset, _split, channel_stats,  # noqa: F401
                   unreadable, with_test)

BUILTIN = ("digits", "digits-aug", "synthetic")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What to load. `name` is a built-in name or a path to an .npz file."""

    name: str = "digits"
    samples: int | None = None  # digits-aug and synthetic: training samples to generate
    size: int | None = None  # synthetic: image side length
    channels: int = 1  # synthetic
    classes: int = 10  # synthetic
    seed: int = 0
    val: str | None = None  # image folder: a validation folder of the same classes
    test: str | None = None  # image folder or .npz: a test split of your own

    @property
    def is_file(self) -> bool:
        return self.name not in BUILTIN


def load(spec: DatasetSpec) -> Dataset:
    check_paths(spec)
    if spec.name == "digits":
        return digits(spec.seed)
    if spec.name == "digits-aug":
        return digits_aug(spec.samples or 20_000, spec.seed)
    if spec.name == "synthetic":
        return synthetic(spec.samples or 10_000, spec.size or 28, spec.channels, spec.classes, spec.seed)
    if os.path.isdir(spec.name):
        from bpt.data import image_folder
        from bpt.data import shared_data

        if shared_data.is_array_dir(spec.name):
            return shared_data.SharedDataset(spec.name, spec.seed)
        return image_folder.load(spec.name, spec.size, spec.seed, val=spec.val, test=spec.test)
    if spec.name.endswith(".npy"):
        raise DataError(f"{spec.name}: an .npy holds images only; training needs labels too: save an .npz "
                        "with arrays x and y")
    if not spec.name.endswith(".npz"):
        raise ConfigError(f"unknown data set {spec.name!r}; choose one of {', '.join(BUILTIN)}, a path to an .npz "
                          "file, an image folder (one subfolder per class) or an array directory (x.npy, y.npy)")
    return from_npz(spec.name, spec.seed, spec.test)


def check_paths(spec: DatasetSpec) -> None:
    """One line for the likeliest typos in a path, before any loader meets them (they ended
    in FileNotFoundError and NotADirectoryError tracebacks, or in "unknown data set")."""
    builtin = spec.name in BUILTIN
    if not builtin and _looks_like_path(spec.name) and not os.path.exists(spec.name):
        raise DataError(f"data set path {spec.name!r} does not exist")
    for flag, path in (("--val", spec.val), ("--test", spec.test)):
        if not path:
            continue
        if builtin:
            raise ConfigError(f"{flag} applies to a data set read from a path; {spec.name} has its own split")
        if not os.path.exists(path):
            raise DataError(f"{flag} {path!r} does not exist")
        if os.path.isdir(spec.name):
            from bpt.data.shared_data import is_array_dir

            if is_array_dir(spec.name):
                raise ConfigError(f"{flag} does not apply to an array directory: it keeps its own split")
            if not os.path.isdir(path):
                raise DataError(f"{flag} {path!r} is a file; an image-folder data set takes a folder of the "
                                "same classes")
        elif os.path.isfile(path) and not path.lower().endswith(".npz"):
            raise DataError(f"{flag} {path!r} is a file but not an .npz: an .npz data set takes an .npz")


def _looks_like_path(name: str) -> bool:
    return os.sep in name or name.startswith((".", "~")) or name.lower().endswith((".npz", ".npy"))


def digits(seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, no download)."""
    images, target = digits_arrays()
    x = (images / 16.0).astype(np.float32)[:, None, :, :]
    return _split(x, target.astype(np.int64), seed, name="digits", num_classes=10)


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) of 0..16, labels), read straight from the CSV that scikit-learn
    ships, as its load_digits does: importing sklearn (and scipy with it) took 2.0 s of the
    demo's start-up here. Falls back to load_digits if the file is not where it was."""
    import importlib.util

    found = importlib.util.find_spec("sklearn")
    path = os.path.join(found.submodule_search_locations[0], "datasets", "data", "digits.csv.gz") if found else ""
    if os.path.isfile(path):
        data = np.loadtxt(path, delimiter=",")
        return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    raw = load_digits()
    return raw.images, raw.target


def _distort(images: np.ndarray, rng: np.random.Generator, size: int, strength: float) -> np.ndarray:
    """Resize to size x size and apply a random affine map (rotation, scale, shift, shear)."""
    import torch
    import torch.nn.functional as F

    n = len(images)
    angle = np.deg2rad(rng.uniform(-15, 15, n)) * strength
    scale = 1.0 + rng.uniform(-0.12, 0.12, n) * strength
    shear = rng.uniform(-0.15, 0.15, n) * strength
    shift = rng.uniform(-0.12, 0.12, (n, 2)) * strength
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    theta = np.stack([np.stack([cos, -sin + shear, shift[:, 0]], 1), np.stack([sin, cos, shift[:, 1]], 1)], 1)
    src = torch.from_numpy(images)
    up = F.interpolate(src, size=(size, size), mode="bilinear", align_corners=False)
    grid = F.affine_grid(torch.from_numpy(theta.astype(np.float32)), list(up.shape), align_corners=False)
    return F.grid_sample(up, grid, align_corners=False, padding_mode="zeros").numpy().astype(np.float32)


def digits_aug(samples: int = 20_000, seed: int = 0, size: int = 28) -> Dataset:
    """Digits resized to 28x28 with seeded random affine distortions, as many as asked for.

    Training images are distorted copies of the training split's originals only; validation
    and test are the held-out originals, resized and undistorted.
    """
    base = digits(seed)
    rng = np.random.default_rng(seed + 1)
    pick = rng.integers(0, len(base.x_train), samples)
    chunks = [
        _distort(base.x_train[pick[i:i + 8192]], rng, size, 1.0) for i in range(0, samples, 8192)
    ]
    x_train = np.concatenate(chunks)
    plain = lambda x: _distort(x, rng, size, 0.0)  # noqa: E731 - resize only
    return Dataset("digits-aug", x_train, base.y_train[pick], plain(base.x_val), base.y_val,
                   plain(base.x_test), base.y_test, 10)


def synthetic(samples: int = 10_000, size: int = 28, channels: int = 1, classes: int = 10,
              seed: int = 0, noise: float = 0.6) -> Dataset:
    """Seeded, learnable images: one smooth template per class, shifted and noised."""
    if size < 4 or channels < 1 or classes < 2 or samples < MIN_SAMPLES:
        raise ConfigError("synthetic data needs size >= 4, channels >= 1, classes >= 2 and samples >= 10")
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(classes, channels, 4, 4)).astype(np.float32)
    templates = np.kron(coarse, np.ones((1, 1, size // 4 + 1, size // 4 + 1), np.float32))[:, :, :size, :size]
    total = int(samples / 0.72) + 1
    y = rng.integers(0, classes, total)
    shifts = rng.integers(-2, 3, (total, 2))
    x = templates[y] + noise * rng.normal(size=(total, channels, size, size)).astype(np.float32)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            sel = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
            x[sel] = np.roll(x[sel], (dy, dx), axis=(2, 3))
    return _split(x.astype(np.float32), y.astype(np.int64), seed, name="synthetic", num_classes=classes)


def from_npz(path: str, seed: int = 0, test: str | None = None) -> Dataset:
    """Load an .npz with arrays `x` (N,H,W), (N,C,H,W) or (N,H,W,C) and integer labels `y` (N,),
    or in Keras's layout (x_train, y_train and optionally x_test, y_test, as MNIST and
    Fashion-MNIST ship), whose test split is then used as given. `test`: another .npz used as
    the test split as given (it replaces a test split inside the first file).

    uint8 images are scaled to [0, 1] and normalised per channel with the training split's
    mean and std, as image folders and array directories are: trained on raw 0..255, LeNet-5
    reached 79% on a digit set where the normalised arrays gave 96% (issue 23). The statistics
    travel in the job spec, so predict and export prepare images alike."""
    x, y, x_test, y_test = read_labelled(path)
    raw_uint8 = x.dtype == np.uint8
    x, y = check_arrays(x, y, path)
    if test is not None:
        x_test, y_test, _, _ = read_labelled(test, role="test")
        where = test
    else:
        where = path
    if x_test is None:
        data = _split(x, y, seed, name=os.path.basename(path))
    else:
        if (x_test.dtype == np.uint8) != raw_uint8:
            raise DataError(f"{where}: test images are {x_test.dtype} and training images {'uint8' if raw_uint8 else 'float'}:"
                            " save both alike")
        x_test, y_test = check_arrays(x_test, y_test, where, min_samples=1)
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(f"{where}: test images have shape {x_test.shape[1:]}, the training data {x.shape[1:]}")
        data = with_test(x, y, x_test, y_test, seed, os.path.basename(path))
    if raw_uint8:
        normalise_uint8(data)
    return data


def normalise_uint8(data: Dataset) -> None:
    """Scale images of 0..255 to [0, 1], then subtract the training split's per-channel mean
    and divide by its std (every split with the training statistics: validation and test
    do not leak into them). In place; records the statistics in data.normalisation."""
    mean, std = channel_stats(data.x_train[:CHANNEL_STATS_SAMPLE] / np.float32(255.0))
    for name in ("x_train", "x_val", "x_test"):
        x = getattr(data, name)
        x /= np.float32(255.0)
        x -= mean[:, None, None]
        x /= std[:, None, None]
    data.normalisation = (tuple(float(m) for m in mean), tuple(float(s) for s in std))


def read_arrays(path: str, role: str = "training") -> tuple[np.ndarray, np.ndarray | None]:
    """(x, y or None) from an .npz (arrays x and y, or Keras's layout: its training arrays,
    or with role "test" its test arrays where it has them) or an .npy (images only), never
    unpickling anything; every failure is one DataError naming the file."""
    x, y, _, _ = read_labelled(path, role=role, need_labels=False)
    return x, y


KERAS_ARRAYS = ("x_train", "y_train")


def read_labelled(path: str, role: str = "training", need_labels: bool = True
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(x, y, x_test, y_test) from an .npz in either layout: x and y (no test split), or
    Keras's x_train, y_train with optional x_test, y_test. For a test file (role "test") the
    Keras layout's test arrays are the ones wanted. An .npy gives images only (y None)."""
    x, y, x_test, y_test = _read_any(path, role)
    if need_labels and y is None:
        raise DataError(f"{path}: missing array(s) y; an .npz needs 'x' and 'y'")
    return x, y, x_test, y_test


def _read_any(path: str, role: str):
    if not os.path.isfile(path):
        raise DataError(f"data file {path!r} does not exist")
    try:
        if path.endswith(".npy"):
            return np.load(path, allow_pickle=False), None, None, None
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):  # an .npy under another name
                return archive, None, None, None
            files = set(archive.files)
            if "x" in files:
                return archive["x"], (archive["y"] if "y" in files else None), None, None
            if set(KERAS_ARRAYS) <= files:
                if role == "test" and {"x_test", "y_test"} <= files:
                    return archive["x_test"], archive["y_test"], None, None
                if "x_test" in files and "y_test" not in files:
                    raise DataError(f"{path}: has x_test but no y_test; save the test labels too")
                if "x_test" in files:
                    return archive["x_train"], archive["y_train"], archive["x_test"], archive["y_test"]
                return archive["x_train"], archive["y_train"], None, None
            missing = ", ".join(sorted({"x", "y"} - files))
            raise DataError(f"{path}: missing array(s) {missing}; an .npz needs 'x' and 'y' (or Keras's "
                            f"'x_train' and 'y_train'), it has {', '.join(sorted(files)) or 'no arrays'}")
    except DataError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise unreadable(path, e) from e


def check_arrays(x: np.ndarray, y: np.ndarray, where: str = "data", min_samples: int = MIN_SAMPLES
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Validate user-supplied arrays; return them as float32 NCHW images and int64 labels."""
    if x.dtype == object or y.dtype == object:
        raise DataError(f"{where}: object arrays are not accepted")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{where}: x must be real numbers, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim == 4 and x.shape[3] in CHANNEL_COUNTS and x.shape[1] not in CHANNEL_COUNTS:
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # channels-last (N,H,W,C), as PIL and TF save them
    if x.ndim != 4:
        raise DataError(f"{where}: x must have shape (N,H,W), (N,C,H,W) or (N,H,W,C), got {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{where}: y must have shape ({len(x)},), got {y.shape}")
    if len(x) < min_samples:
        raise DataError(f"{where}: needs at least {min_samples} samples, got {len(x)}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(f"{where}: labels y must be integers")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: labels y must be integers, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise DataError(f"{where}: labels out of range: found {int(y.min())}, labels must be >= 0")
    if len(y) and y.max() >= 1000:
        raise DataError(f"{where}: labels out of range: found {int(y.max())}, at most 1000 classes")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise DataError(f"{where}: x contains NaN or infinite values")
    return x, y.astype(np.int64)
