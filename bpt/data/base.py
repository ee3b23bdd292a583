"""What every data loader shares: the Dataset type, the splits, channel statistics and the
one-line error for an unreadable array file. Its own module so that the loaders
(datasets, image_folder, shared_data) import it and not each other (issue 27: datasets
imported image_folder and shared_data, and both imported datasets back)."""

from __future__ import annotations

import dataclasses

import numpy as np

from bpt.errors import DataError

MIN_SAMPLES = 10

@dataclasses.dataclass
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    normalisation: tuple = ()  # (mean, std) per channel, where the loader normalised (image folders)
    class_names: tuple = ()  # image folders: the class folders' names, in label order

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.x_train.shape[1:])

    shared = False  # staged in Redis (bpt.data.shared_data.SharedDataset is read by the workers)

    @property
    def n_train(self) -> int:
        return len(self.x_train)

    def sample(self, n: int = 2) -> np.ndarray:
        return np.ascontiguousarray(self.x_train[:n])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test))

def _split(x, y, seed, test_fraction=0.2, val_fraction=0.08, name="data", num_classes=None) -> Dataset:
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, int(round(len(x) * test_fraction)))
    n_val = max(1, int(round(len(x) * val_fraction)))
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    classes = num_classes or int(y.max()) + 1
    return Dataset(name, x[train], y[train], x[val], y[val], x[test], y[test], classes)

CHANNEL_STATS_SAMPLE = 20_000  # training images the normalisation is measured on


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (float32) of NCHW images; a constant channel gets std 1."""
    mean = x.mean(axis=(0, 2, 3), dtype=np.float64)
    std = x.std(axis=(0, 2, 3), dtype=np.float64)
    return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)

def with_test(x, y, x_test, y_test, seed: int, name: str, x_val=None, y_val=None) -> Dataset:
    """A data set whose test split (and validation split, if given) the user supplied."""
    classes = int(max(y.max(), y_test.max(), -1 if y_val is None else y_val.max())) + 1
    if x_val is None:
        order = np.random.default_rng(seed).permutation(len(x))
        n_val = max(1, int(round(len(x) * 0.08)))
        x_val, y_val, x, y = x[order[:n_val]], y[order[:n_val]], x[order[n_val:]], y[order[n_val:]]
    return Dataset(name, x, y, x_val, y_val, x_test, y_test, classes)

def unreadable(path: str, error: Exception) -> DataError:
    """The one-line error for an .npz or .npy file numpy could not load with allow_pickle=False.
    numpy's own message for an object array suggests allow_pickle: bpt never does that."""
    if isinstance(error, ValueError) and "pickle" in str(error).lower():
        return DataError(f"{path}: holds Python objects (pickled data), which bpt does not load; "
                         "save plain numeric arrays")
    return DataError(f"{path}: not a readable .npz or .npy file ({error.__class__.__name__}: {error})")

CHANNEL_COUNTS = (1, 3, 4)  # grey, RGB, RGBA: what a last axis of images holds
