import numpy as np
import pytest

from bpt import datasets
from bpt.errors import ConfigError, DataError


def test_digits_splits_are_disjoint_and_shaped():
    d = datasets.digits(0)
    assert d.x_train.shape[1:] == (1, 8, 8) and d.x_train.dtype == np.float32
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 1797
    assert d.num_classes == 10 and d.y_train.dtype == np.int64


def test_digits_aug_is_seeded_28x28_and_tests_on_originals():
    a, b = datasets.digits_aug(300, seed=3), datasets.digits_aug(300, seed=3)
    assert a.x_train.shape == (300, 1, 28, 28)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert len(a.x_test) == len(datasets.digits(3).x_test)


def test_synthetic_is_seeded_and_shaped():
    a = datasets.synthetic(500, size=32, channels=3, classes=4, seed=1)
    assert a.x_train.shape[1:] == (3, 32, 32) and a.num_classes == 4
    np.testing.assert_array_equal(a.x_train, datasets.synthetic(500, 32, 3, 4, seed=1).x_train)


def test_npz_round_trip(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.random.rand(50, 8, 8), y=np.arange(50) % 5)
    d = datasets.from_npz(str(path))
    assert d.input_shape == (1, 8, 8) and d.num_classes == 5


def test_unknown_name_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown data set 'mnist'"):
        datasets.load(datasets.DatasetSpec("mnist"))


@pytest.mark.parametrize("x,y,message", [
    (np.zeros((20, 8, 8)), np.full(20, -1), "labels out of range"),
    (np.full((20, 8, 8), np.nan), np.zeros(20, int), "NaN"),
    (np.zeros((20, 8)), np.zeros(20, int), "shape"),
    (np.zeros((20, 8, 8)), np.zeros(19, int), "y must have shape"),
    (np.zeros((20, 8, 8)), np.full(20, 0.5), "integers"),
    (np.zeros((5, 8, 8)), np.zeros(5, int), "at least"),
    (np.zeros((20, 8, 8), dtype=complex), np.zeros(20, int), "real numbers"),
])
def test_check_arrays_refuses_bad_data(x, y, message):
    with pytest.raises(DataError, match=message):
        datasets.check_arrays(x, y)


def test_truncated_npz_is_a_data_error(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.zeros((20, 8, 8)), y=np.zeros(20, int))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="not a readable .npz"):
        datasets.from_npz(str(path))


def test_pickled_object_array_in_npz_is_refused_without_suggesting_allow_pickle(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([object()] * 20, dtype=object), y=np.zeros(20, int))
    with pytest.raises(DataError, match="pickled data") as refused:
        datasets.from_npz(str(path))
    assert "allow_pickle" not in str(refused.value)


def test_channels_last_images_are_recognised():
    x = np.random.default_rng(0).normal(size=(20, 16, 16, 3)).astype(np.float32)
    got, _ = datasets.check_arrays(x, np.zeros(20, int))
    assert got.shape == (20, 3, 16, 16)
    np.testing.assert_array_equal(got[:, 2], x[..., 2])
    assert datasets.check_arrays(np.zeros((20, 3, 16, 16)), np.zeros(20, int))[0].shape == (20, 3, 16, 16)


def test_an_npy_is_images_only_and_training_says_it_needs_labels(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((20, 8, 8)))
    x, y = datasets.read_arrays(str(tmp_path / "x.npy"))
    assert x.shape == (20, 8, 8) and y is None
    with pytest.raises(DataError, match="needs labels"):
        datasets.load(datasets.DatasetSpec(str(tmp_path / "x.npy")))


def test_digits_read_from_sklearns_file_are_exactly_load_digits():
    from sklearn.datasets import load_digits

    from bpt.datasets import digits_arrays

    images, target = digits_arrays()
    raw = load_digits()
    assert np.array_equal(images, raw.images) and np.array_equal(target, raw.target)
