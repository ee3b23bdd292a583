"""A user's own CNN and data on real workers: declarative model files, installed plug-in
models, image folders, data the workers read themselves, and the training recipe."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from bpt.data import image_folder
from bpt.data.datasets import DatasetSpec
from bpt.data.prepare import JobChoices, prepare
from bpt.settings import Settings
from bpt.broker.connection import connect
from bpt.broker.job_store import FINISHED
from bpt.broker.redis_server import PrivateRedis
from bpt.workers.submit import submit

pytestmark = pytest.mark.slow
BPT = [sys.executable, "-m", "bpt.cli"]
HERE = os.path.dirname(__file__)


def wait(store, timeout=180):
    deadline = time.monotonic() + timeout
    while store.status() not in FINISHED:
        assert time.monotonic() < deadline, f"job stuck: {store.state()}"
        time.sleep(0.1)
    return store.state()


def run(app, client, settings, job_id, dataset, timeout=180, edit=None, **choices):
    spec, data, weights = prepare(JobChoices(dataset, workers=2, **choices), job_id=job_id)
    if edit:
        spec = dataclasses.replace(spec, **edit)
    store = submit(app, client, settings, spec, data, weights)
    return spec, data, store, wait(store, timeout)


def test_resnet20_from_its_model_file_trains_on_an_image_folder_from_the_command_line(tmp_path):
    """The acceptance command: bpt train --model examples/models/resnet20.toml --dataset FOLDER
    (32x32 PNGs the test writes: the class is the image's dominant colour), then bpt predict on
    the folder; metrics.csv has a row per evaluation."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = rng.uniform(0, 0.6, (300, 32, 32, 3))
    x[np.arange(300), :, :, y] += 0.4
    image_folder.write_folder(str(tmp_path / "images"), (x * 255).astype(np.uint8), y, ["red", "green", "blue"])
    out = tmp_path / "out"
    result = subprocess.run(BPT + ["train", "--model", "examples/models/resnet20.toml", "--dataset", str(tmp_path / "images"),
                                   "--epochs", "3", "--subset-size", "64", "--workers", "2", "--optimizer", "adamw",
                                   "--lr", "0.003", "--lr-schedule", "cosine", "--augment", "flip", "--augment", "crop",
                                   "--top-k", "2", "--quiet", "--json", "--out", str(out),
                                   "--tensorboard", str(tmp_path / "tb")],
                            capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "done" and summary["test_accuracy"] >= 0.9, summary
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("version,epoch,samples,wall_seconds,train_loss,test_loss,test_accuracy,top_k_accuracy")
    assert len(rows) == 1 + 3 + 1  # one per epoch, and the final one
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb" / summary["job_id"]))
    events.Reload()
    assert [round(e.value, 4) for e in events.Scalars("test/accuracy")][-1] == round(summary["test_accuracy"], 4)
    assert len(events.Scalars("test/top_k_accuracy")) == 4
    predicted = subprocess.run(BPT + ["predict", str(out / "model.safetensors"), "--images", str(tmp_path / "images"),
                                      "--json"], capture_output=True, text=True, timeout=120)
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["accuracy"] >= 0.9


def test_a_declarative_cnn_beats_logistic_regression_on_16x16_rgb_images(workers, app, client, settings, job_id,
                                                                          tmp_path):
    """3,000 16x16 RGB images of a rule a linear model cannot learn (a glyph at a random
    place: image_folder.glyphs), as a folder of PNGs; the same split for both."""
    from sklearn.linear_model import LogisticRegression

    x, y = image_folder.glyphs(3000, size=16, seed=0)
    image_folder.write_folder(str(tmp_path / "glyphs"), x, y)
    spec, data, store, state = run(app, client, settings, job_id, DatasetSpec(str(tmp_path / "glyphs"), size=16),
                                   model="examples/models/small-cnn16.json", epochs=12, optimizer="adamw", lr=0.003)
    flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
    baseline = LogisticRegression(max_iter=2000).fit(flat(data.x_train), data.y_train).score(flat(data.x_test), data.y_test)
    assert state["status"] == "done", state
    print(f"declarative CNN {state['test_accuracy']:.3f}, logistic regression {baseline:.3f}")
    assert state["test_accuracy"] >= baseline + 0.25


def test_a_target_accuracy_ends_the_job_early_as_done_with_the_reason(workers, app, client, settings, job_id):
    spec, _, store, state = run(app, client, settings, job_id, DatasetSpec("digits"), epochs=20,
                                target_accuracy=0.9, top_k=3)
    assert state["status"] == "done", state
    assert "reached the target 0.9" in state["reason"]
    assert state["version"] < spec.total_tasks  # it stopped before its last epoch
    evals = store.evals()
    assert evals[-2]["val_accuracy"] >= 0.9 and all("top_k_accuracy" in e for e in evals)
    assert state["top_k_accuracy"] >= state["test_accuracy"]


@pytest.fixture(scope="module")
def toy_plugin(tmp_path_factory):
    """Install tests/plugins/bpt_toy_models into this venv (workers share it), as a user
    installs their model package on every worker; removed afterwards."""
    source = tmp_path_factory.mktemp("plugin") / "bpt_toy_models"
    shutil.copytree(os.path.join(HERE, "..", "plugins", "bpt_toy_models"), source)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + ["install", "--no-deps", "--no-build-isolation", str(source)], check=True, timeout=180)
    yield "bpt-toy-models:tiny"
    subprocess.run(pip + ["uninstall", "-y", "bpt-toy-models"], check=True, timeout=120)


def test_an_installed_plugin_model_trains(toy_plugin, workers, app, client, settings, job_id):
    spec, _, store, state = run(app, client, settings, job_id, DatasetSpec("digits"), model=toy_plugin, epochs=8)
    assert spec.plugin == "0.3.1" and spec.architecture == ""
    assert state["status"] == "done" and state["test_accuracy"] >= 0.9, state


@pytest.mark.parametrize("edit, why", [({"plugin": "9.9.9"}, "is version 0.3.1 here, the job needs 9.9.9"),
                                       ({"layout": "0123456789abcdef"}, "builds with other parameters here")])
def test_workers_that_cannot_build_the_plugin_decline_and_the_job_says_which(toy_plugin, edit, why, workers, app,
                                                                           client, settings, job_id):
    spec, _, store, state = run(app, client, settings, job_id, DatasetSpec("digits"), model=toy_plugin, epochs=2,
                                edit=edit, timeout=60)
    assert state["status"] == "failed", state
    assert f"no live worker can build model {toy_plugin}" in state["error"] and why in state["error"]
    assert set(store.lacking()) == set(workers.names)
    declined = [e for e in store.events() if e["event"] == "model-unavailable"]
    assert {e["worker"] for e in declined} == set(workers.names)
    assert int(state.get("accepted", 0)) == 0  # nothing trained with a model other than the job's


def write_big_array_dir(path, gigabytes=1.05, side=64):
    """uint8 (N, 64, 64, 3) images whose class (3) is the brightest channel, over 1 GB."""
    n = int(gigabytes * 2**30 / (side * side * 3)) + 1
    os.makedirs(path)
    x = np.lib.format.open_memmap(os.path.join(path, "x.npy"), mode="w+", dtype=np.uint8, shape=(n, side, side, 3))
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    for i in range(0, n, 8192):
        chunk = rng.integers(0, 150, (min(8192, n - i), side, side, 3), dtype=np.uint8)
        chunk[np.arange(len(chunk)), :, :, y[i:i + 8192]] += 100
        x[i:i + 8192] = chunk
    x.flush()
    np.save(os.path.join(path, "y.npy"), y)
    return n


def test_a_data_set_over_1_gb_read_by_the_workers_trains_with_redis_under_100_mb(tmp_path):
    from bpt.workers.app import make_app
    from bpt.workers.launcher import LocalWorkers

    n = write_big_array_dir(tmp_path / "big")
    assert os.path.getsize(tmp_path / "big" / "x.npy") > 2**30
    model = tmp_path / "fast.toml"
    model.write_text('layers = [{type = "Conv2d", out_channels = 8, kernel_size = 4, stride = 4}, {type = "ReLU"},\n'
                     '{type = "AdaptiveAvgPool2d", output_size = 4}, {type = "Flatten"},\n'
                     '{type = "Linear", out_features = "classes"}]\n')
    with PrivateRedis() as server:
        settings = Settings(redis_url=server.url, workers=2, threads=1, poll_seconds=0.1)
        client = connect(server.url)
        with LocalWorkers(settings, 2):
            app = make_app(settings)
            spec, data, weights = prepare(JobChoices(DatasetSpec(str(tmp_path / "big")), model=str(model), epochs=1,
                                                     workers=2), job_id="big-data")
            assert spec.data_path and spec.n_train == n - 10_000 - 5_000
            store = submit(app, client, settings, spec, data, weights)
            state = wait(store, timeout=240)
            peak = client.info("memory")["used_memory_peak"]
            app.close()
        assert state["status"] == "done" and state["test_accuracy"] >= 0.9, state
        assert not list(client.scan_iter(match=store.keys.data("*")))  # nothing was staged
        print(f"{n} images, {os.path.getsize(tmp_path / 'big' / 'x.npy') / 2**30:.2f} GiB; Redis peak "
              f"{peak / 2**20:.1f} MiB; accuracy {state['test_accuracy']:.3f}")
        assert peak < 100 * 2**20
