"""Image folders (bpt.data.image_folder) and array directories read by the workers (bpt.data.shared_data)."""

import os

import numpy as np
import pytest
from PIL import Image

from bpt.data import datasets
from bpt.data import image_folder
from bpt.data import shared_data
from bpt.errors import DataError


@pytest.fixture
def folder(tmp_path):
    x, y = image_folder.glyphs(60, size=16, seed=0)
    image_folder.write_folder(str(tmp_path / "train"), x, y)
    return tmp_path / "train", x, y


def test_a_folder_reads_back_as_its_images_and_sorted_class_ids(folder):
    path, x, y = folder
    got_x, got_y, classes = image_folder.read_folder(str(path), 16)
    assert classes == [f"class{c:03d}" for c in range(10)]
    order = np.argsort(y, kind="stable")  # read class by class, files in name order
    assert np.array_equal(got_y, y[order]) and np.array_equal(got_x, x[order])


def test_loading_normalises_per_channel_and_gives_nchw(folder):
    data = datasets.load(datasets.DatasetSpec(str(folder[0]), size=16))
    assert data.x_train.shape[1:] == (3, 16, 16) and data.num_classes == 10
    every = np.concatenate([data.x_train, data.x_val, data.x_test])
    assert np.allclose(every.mean(axis=(0, 2, 3)), 0, atol=1e-4) and np.allclose(every.std(axis=(0, 2, 3)), 1, atol=1e-3)
    assert len(data.normalisation[0]) == 3


def test_images_of_any_size_are_resized_and_centre_cropped(tmp_path):
    for c in ("a", "b"):
        os.makedirs(tmp_path / c)
        for i in range(6):
            Image.new("L", (40, 20), 255 * (c == "b")).save(tmp_path / c / f"{i}.jpg")
    x, y, _ = image_folder.read_folder(str(tmp_path), 12)
    assert x.shape == (12, 12, 12, 1)  # all greyscale: one channel
    assert x[y == 0].max() < 10 and x[y == 1].min() > 245


def test_own_validation_and_test_folders_are_used_as_given(folder, tmp_path):
    x, y = image_folder.glyphs(30, size=16, seed=1)
    image_folder.write_folder(str(tmp_path / "test"), x, y, classes=[f"class{c:03d}" for c in range(10)])
    data = datasets.load(datasets.DatasetSpec(str(folder[0]), size=16, test=str(tmp_path / "test")))
    assert len(data.x_test) == 30 and len(data.x_train) + len(data.x_val) == 60


def test_a_test_folder_with_other_classes_is_refused(folder, tmp_path):
    x, y = image_folder.glyphs(30, size=16, seed=1)
    image_folder.write_folder(str(tmp_path / "test"), x, y % 3)
    with pytest.raises(DataError, match="differ from the training folder's"):
        datasets.load(datasets.DatasetSpec(str(folder[0]), size=16, test=str(tmp_path / "test")))


def test_a_broken_image_is_named(folder):
    path = folder[0] / "class003" / "broken.png"
    path.write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png: not a readable image"):
        image_folder.read_folder(str(folder[0]), 16)


def test_a_folder_without_class_folders_is_refused(tmp_path):
    (tmp_path / "only").mkdir()
    with pytest.raises(DataError, match="one subfolder per class"):
        datasets.load(datasets.DatasetSpec(str(tmp_path)))


def write_array_dir(path, n=500, channels_last=True, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = (rng.integers(0, 60, (n, 8, 8, 3)) + 60 * y[:, None, None, None]).astype(np.uint8)
    os.makedirs(path, exist_ok=True)
    np.save(os.path.join(path, "x.npy"), x if channels_last else x.transpose(0, 3, 1, 2))
    np.save(os.path.join(path, "y.npy"), y)
    return x, y


def test_an_array_directory_is_split_alike_everywhere_and_read_by_rows(tmp_path):
    x, y = write_array_dir(tmp_path / "d")
    a = shared_data.SharedArrays(str(tmp_path / "d"), seed=3)
    b = shared_data.SharedArrays(str(tmp_path / "d"), seed=3, mean=a.mean, std=a.std)
    assert a.input_shape == (3, 8, 8) and a.n_train == 500 - 100 - 40 and a.num_classes == 4
    xa, ya = a.rows(10, 20)
    xb, yb = b.rows(10, 20)
    assert np.array_equal(xa, xb) and xa.dtype == np.float32 and xa.shape == (10, 3, 8, 8)
    index = np.sort(a.train_index[10:20])  # a task's rows, read in file order
    raw = x[index].transpose(0, 3, 1, 2) / 255.0
    assert np.allclose(xa, (raw - np.array(a.mean)[:, None, None]) / np.array(a.std)[:, None, None], atol=1e-5)
    assert np.array_equal(ya, y[index])
    every = set(a.train_index) | set(a._splits["val"][2]) | set(a._splits["test"][2])
    assert len(every) == 500  # the three splits are disjoint and cover every row
    assert isinstance(a.x, np.memmap)


def test_an_array_directory_with_its_own_test_split(tmp_path):
    write_array_dir(tmp_path / "d")
    x_test, y_test = write_array_dir(tmp_path / "t", n=50, seed=1)
    os.rename(tmp_path / "t" / "x.npy", tmp_path / "d" / "x_test.npy")
    os.rename(tmp_path / "t" / "y.npy", tmp_path / "d" / "y_test.npy")
    a = shared_data.SharedArrays(str(tmp_path / "d"), seed=0)
    assert a.n_train == 460 and len(a.split("test")[1]) == 50


def test_a_pickled_array_directory_is_refused(tmp_path):
    write_array_dir(tmp_path / "d")
    np.save(tmp_path / "d" / "y.npy", np.array([{"a": 1}] * 500, dtype=object), allow_pickle=True)
    with pytest.raises(DataError) as e:
        shared_data.SharedArrays(str(tmp_path / "d"), seed=0)
    assert "pickled" in str(e.value) and "allow_pickle" not in str(e.value)


def test_a_class_sorted_array_directory_still_mixes_classes_in_every_task(tmp_path):
    """A file written class by class (as a converted image folder is) must not give one class
    per task: the training rows are a permutation, each task's read in file order."""
    x, y = write_array_dir(tmp_path / "d", n=400)
    order = np.argsort(y, kind="stable")
    np.save(tmp_path / "d" / "x.npy", x[order])
    np.save(tmp_path / "d" / "y.npy", y[order])
    a = shared_data.SharedArrays(str(tmp_path / "d"), seed=0)
    for start in range(0, a.n_train - 64, 64):
        assert len(set(a.rows(start, start + 64)[1])) >= 3


def test_an_own_test_split_of_another_dtype_is_refused(tmp_path):
    write_array_dir(tmp_path / "d")
    np.save(tmp_path / "d" / "x_test.npy", np.zeros((20, 8, 8, 3), np.float32))
    np.save(tmp_path / "d" / "y_test.npy", np.zeros(20, np.int64))
    with pytest.raises(DataError, match="do not match"):
        shared_data.SharedArrays(str(tmp_path / "d"), seed=0)
