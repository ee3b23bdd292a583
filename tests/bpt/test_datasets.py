import numpy as np
import pytest

from bpt.data import datasets
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

    from bpt.data.datasets import digits_arrays

    images, target = digits_arrays()
    raw = load_digits()
    assert np.array_equal(images, raw.images) and np.array_equal(target, raw.target)


def _keras_npz(path, rng, n_train=60, n_test=20, side=8):
    x_train = rng.integers(0, 256, (n_train, side, side), dtype=np.uint8)
    x_test = rng.integers(0, 256, (n_test, side, side), dtype=np.uint8)
    np.savez(path, x_train=x_train, y_train=np.arange(n_train) % 3, x_test=x_test, y_test=np.arange(n_test) % 3)
    return x_train, x_test


def test_a_keras_layout_uint8_npz_keeps_its_test_split_and_is_normalised_with_training_statistics(tmp_path):
    """Issue 23: x_train/y_train/x_test/y_test (how MNIST and Fashion-MNIST ship) was refused;
    uint8 arrays were trained on raw 0..255."""
    path = tmp_path / "keras.npz"
    x_train, x_test = _keras_npz(path, np.random.default_rng(0))
    d = datasets.from_npz(str(path))
    assert len(d.x_test) == 20 and len(d.x_train) + len(d.x_val) == 60 and d.num_classes == 3
    (mean,), (std,) = d.normalisation
    rows = np.concatenate([d.x_train, d.x_val]) * std + mean  # back to [0, 1]
    assert rows.min() >= -1e-6 and rows.max() <= 1 + 1e-6
    assert abs(float(d.x_train.mean())) < 1e-3 and abs(float(d.x_train.std()) - 1) < 1e-3  # training statistics
    np.testing.assert_allclose(d.x_test[:, 0], (x_test / 255.0 - mean) / std, rtol=1e-5, atol=1e-5)
    # the test split is the file's own, in its order, with its labels
    np.testing.assert_array_equal(d.y_test, np.arange(20) % 3)


def test_float_npz_is_left_as_given(tmp_path):
    path = tmp_path / "f.npz"
    x = np.random.default_rng(1).random((40, 8, 8)).astype(np.float32)
    np.savez(path, x=x, y=np.arange(40) % 2)
    d = datasets.from_npz(str(path))
    assert d.normalisation == () and d.x_train.max() <= 1


def test_the_normalisation_travels_in_the_spec_for_predict_and_export(tmp_path):
    from bpt.data.prepare import JobChoices, prepare

    path = tmp_path / "keras.npz"
    _keras_npz(path, np.random.default_rng(2), n_train=80, n_test=20)
    spec, data, _ = prepare(JobChoices(datasets.DatasetSpec(str(path)), model="digits-cnn", epochs=1))
    assert spec.data_mean == data.normalisation[0] and spec.data_std == data.normalisation[1]
    assert len(spec.data_mean) == 1 and 0 < spec.data_mean[0] < 1


def test_a_test_file_must_match_the_training_files_dtype_and_a_keras_test_file_gives_its_test_arrays(tmp_path):
    path, other = tmp_path / "train.npz", tmp_path / "test.npz"
    _keras_npz(path, np.random.default_rng(3))
    _keras_npz(other, np.random.default_rng(4), n_test=12)
    assert len(datasets.from_npz(str(path), test=str(other)).x_test) == 12
    np.savez(tmp_path / "float.npz", x=np.zeros((20, 8, 8), np.float32), y=np.zeros(20, int))
    with pytest.raises(DataError, match="save both alike"):
        datasets.from_npz(str(path), test=str(tmp_path / "float.npz"))


def test_an_npz_with_neither_layout_names_what_it_has(tmp_path):
    path = tmp_path / "odd.npz"
    np.savez(path, images=np.zeros((20, 8, 8)), labels=np.zeros(20, int))
    with pytest.raises(DataError, match="x_train.*it has images, labels"):
        datasets.from_npz(str(path))


def test_predict_reads_a_keras_files_test_split(tmp_path):
    """bpt predict on Fashion-MNIST's .npz must score its test images, not its training ones."""
    path = tmp_path / "keras.npz"
    _, x_test = _keras_npz(path, np.random.default_rng(5))
    x, y = datasets.read_arrays(str(path), role="test")
    np.testing.assert_array_equal(x, x_test)
    assert len(y) == 20


def test_an_old_spec_without_lr_scaling_trains_as_submitted():
    import json

    from bpt.job.jobspec import JobSpec
    from bpt.data.prepare import JobChoices, prepare

    spec, _, _ = prepare(JobChoices(datasets.DatasetSpec("digits"), epochs=1))
    raw = json.loads(spec.to_json())
    del raw["train"]["lr_scaling"]
    assert JobSpec.from_json(json.dumps(raw)).train.lr_scaling == "none"
