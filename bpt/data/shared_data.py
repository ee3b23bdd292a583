"""Data the workers read themselves, from a path every worker can reach, instead of data
staged in Redis.

Staging copies the whole set into Redis (one value caps at 512 MB; bpt stages 256 MiB by
default), so a large set goes on a shared filesystem as an *array directory*:

    DIR/x.npy        images (N,H,W), (N,C,H,W) or (N,H,W,C); uint8 kept compact, or float
    DIR/y.npy        integer labels (N,)
    DIR/x_test.npy   optional: a test split of your own (with y_test.npy), used as given
    DIR/x_val.npy    optional: a validation split of your own (with y_val.npy)

Workers memory-map x.npy and read only the rows of their task; Redis holds the job's
metadata and weights only. uint8 images are scaled to [0, 1] and normalised per channel on
the fly, with a mean and standard deviation measured at submit and carried by the job. The
train/val/test split is a seeded permutation every worker computes alike (numpy's PCG64 is
stable across machines and versions); without files of their own, val and test take 8% and
20% of the rows, at most MAX_VAL and MAX_TEST (an evaluation reads all of its split)."""

from __future__ import annotations

import os

import numpy as np

from bpt.data.base import CHANNEL_COUNTS, MIN_SAMPLES, channel_stats, unreadable
from bpt.errors import DataError

MAX_VAL = 5_000
MAX_TEST = 10_000
STATS_SAMPLE = 10_000  # rows the mean and std are measured on at submit


def is_array_dir(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "x.npy"))


class SharedArrays:
    """One array directory, opened read-only: splits, rows and normalisation."""

    def __init__(self, path: str, seed: int, mean: tuple = (), std: tuple = ()):
        self.path = path
        self.x = self._open("x", mmap=True)
        self.y = np.asarray(self._open("y", mmap=False))
        if self.x.ndim not in (3, 4) or len(self.y) != len(self.x) or self.y.ndim != 1:
            raise DataError(f"{path}: x.npy must be (N,H,W), (N,C,H,W) or (N,H,W,C) and y.npy (N,), got "
                            f"{self.x.shape} and {self.y.shape}")
        if not np.issubdtype(self.y.dtype, np.integer):
            raise DataError(f"{path}: labels y.npy must be integers, got dtype {self.y.dtype}")
        if not (self.x.dtype == np.uint8 or np.issubdtype(self.x.dtype, np.floating)):
            raise DataError(f"{path}: x.npy must be uint8 or float, got dtype {self.x.dtype}")
        self.channels_last = self.x.ndim == 4 and self.x.shape[3] in CHANNEL_COUNTS and self.x.shape[1] not in CHANNEL_COUNTS
        own = {name: self._pair(name) for name in ("val", "test")}
        order = np.random.default_rng(seed).permutation(len(self.x))
        n_test = 0 if own["test"] else min(MAX_TEST, max(1, round(len(order) * 0.2)))
        n_val = 0 if own["val"] else min(MAX_VAL, max(1, round(len(order) * 0.08)))
        # Permuted, not sorted: a file written class by class must not give one class per task.
        # rows() sorts each task's indices only to read them in file order.
        self.train_index = order[n_test + n_val:]
        self._splits = {"test": own["test"] or (self.x, self.y, np.sort(order[:n_test])),
                        "val": own["val"] or (self.x, self.y, np.sort(order[n_test:n_test + n_val]))}
        if len(self.train_index) < MIN_SAMPLES:
            raise DataError(f"{path}: needs at least {MIN_SAMPLES} training samples, got {len(self.train_index)}")
        self.mean, self.std = (tuple(mean), tuple(std)) if mean else self.measure()

    def _open(self, name: str, mmap: bool):
        file = os.path.join(self.path, f"{name}.npy")
        if not os.path.isfile(file):
            raise DataError(f"{self.path}: missing {name}.npy (an array directory holds x.npy and y.npy)")
        try:
            return np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise unreadable(file, e) from e

    def _pair(self, split: str):
        if not os.path.isfile(os.path.join(self.path, f"x_{split}.npy")):
            return None
        x, y = self._open(f"x_{split}", mmap=True), np.asarray(self._open(f"y_{split}", mmap=False))
        if x.shape[1:] != self.x.shape[1:] or x.dtype != self.x.dtype or y.shape != (len(x),) \
                or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{self.path}: x_{split}.npy {x.shape} {x.dtype} / y_{split}.npy {y.shape} {y.dtype} do not "
                            f"match x.npy's images {self.x.shape[1:]} {self.x.dtype} and integer labels")
        return x, y, np.arange(len(x))

    @property
    def n_train(self) -> int:
        return len(self.train_index)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        shape = self.x.shape[1:]
        if len(shape) == 2:
            return (1, *shape)
        return (shape[2], shape[0], shape[1]) if self.channels_last else tuple(shape)

    @property
    def num_classes(self) -> int:
        return int(max(self.y.max(), *(s[1].max() for s in self._splits.values()))) + 1

    def measure(self) -> tuple[tuple, tuple]:
        """Per-channel mean and std of the scaled training images, on a seeded sample."""
        pick = np.sort(np.random.default_rng(0).choice(self.train_index, min(STATS_SAMPLE, self.n_train), False))
        # (a sample of the training rows only: validation and test do not leak into the statistics)
        mean, std = channel_stats(self._images(self.x[pick], normalise=False))
        return tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def _images(self, raw: np.ndarray, normalise: bool = True) -> np.ndarray:
        x = np.asarray(raw)
        if x.ndim == 3:
            x = x[:, None]
        elif self.channels_last:
            x = x.transpose(0, 3, 1, 2)
        x = x.astype(np.float32) / (255.0 if raw.dtype == np.uint8 else 1.0)
        if normalise:
            x = (x - np.asarray(self.mean, np.float32)[:, None, None]) / np.asarray(self.std, np.float32)[:, None, None]
        if not np.all(np.isfinite(x)):
            raise DataError(f"{self.path}: images contain NaN or infinite values")
        return np.ascontiguousarray(x)

    def rows(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Training rows [start, end) of the permuted training split; reads only those."""
        if not 0 <= start < end <= self.n_train:
            raise DataError(f"rows {start}:{end} are outside the {self.n_train} training rows of {self.path}")
        index = np.sort(self.train_index[start:end])  # read in file order: the task shuffles anyway
        return self._images(self.x[index]), self.y[index].astype(np.int64)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        x, y, index = self._splits[name]
        return self._images(x[index]), np.asarray(y[index]).astype(np.int64)


class SharedDataset:
    """What `bpt train` needs of an array directory at submit: shapes, classes, a sample
    for the model's trial forward pass, and the statistics the workers normalise with.
    Nothing of it is staged in Redis."""

    shared = True

    def __init__(self, path: str, seed: int):
        self.path = os.path.abspath(path)
        self.arrays = SharedArrays(self.path, seed)
        self.name = os.path.basename(self.path.rstrip("/"))
        self.input_shape = self.arrays.input_shape
        self.num_classes = self.arrays.num_classes
        self.n_train = self.arrays.n_train
        if int(self.arrays.y.min()) < 0:
            raise DataError(f"{path}: labels out of range: found {int(self.arrays.y.min())}, labels must be >= 0")

    def sample(self, n: int = 2) -> np.ndarray:
        return self.arrays.rows(0, min(n, self.n_train))[0]
