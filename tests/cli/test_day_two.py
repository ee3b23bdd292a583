"""Issue 28's walk through a user's day, and --resume against a cluster: real processes,
real Redis, real workers."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bpt.job.jobspec import JobSpec

pytestmark = pytest.mark.slow

BPT = [sys.executable, "-m", "bpt.cli"]
EMBEDDED = {**os.environ, "BPT_REDIS_URL": ""}


def bpt(*args, env=None, timeout=240):
    return subprocess.run(BPT + list(args), capture_output=True, text=True, timeout=timeout, env=env or os.environ,
                          stdin=subprocess.DEVNULL)


def image_folder(root, per_class, rng, flat=False):
    """Three classes told apart by brightness and stripes, 32x32 grey PNGs (the size bpt trains at)."""
    from PIL import Image

    for name, (low, high) in {"bright": (150, 255), "dark": (0, 110), "mid": (60, 200)}.items():
        folder = root if flat else root / name
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(low, high, (32, 32)).astype(np.uint8)
            pixels[:, ::4] //= 2 if name == "mid" else 1
            Image.fromarray(pixels).save(folder / f"{name}-{i}.png")


def checkpoint_version(path) -> int:
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        return int(f.metadata()["version"])


def checkpoint_epoch(path) -> int:
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        return int(json.loads(f.metadata()["bpt_checkpoint"])["state"].get("epoch", 0))


def test_a_users_day_train_ctrl_c_resume_fine_tune_predict_and_onnx(tmp_path):
    """Image folder -> train -> Ctrl-C (a checkpoint) -> --resume finishes the same job at
    the same version, epoch and lr schedule, every subset trained once -> --init-from
    fine-tunes on a second folder -> predict a flat folder to CSV by class name -> ONNX on
    raw images gives bpt predict's classes."""
    import onnxruntime
    from PIL import Image

    rng = np.random.default_rng(0)
    image_folder(tmp_path / "photos", 60, rng)
    image_folder(tmp_path / "more", 30, rng)
    image_folder(tmp_path / "new", 4, rng, flat=True)
    run = tmp_path / "run"
    flags = ["--epochs", "60", "--workers", "2", "--lr-schedule", "cosine", "--subset-size", "32"]
    proc = subprocess.Popen(BPT + ["train", "--dataset", str(tmp_path / "photos"), *flags, "--out", str(run),
                                   "--quiet", "--checkpoint-every", "0.02"], env=EMBEDDED, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.safetensors").exists() or checkpoint_version(run / "checkpoint.safetensors") < 30:
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"`bpt train --resume {run}` continues job" in err, err
    stopped_at = checkpoint_version(run / "checkpoint.safetensors")
    stopped_epoch = checkpoint_epoch(run / "checkpoint.safetensors")
    assert stopped_at > 0
    resumed = bpt("train", "--resume", str(run), "--workers", "2", "--json", env=EMBEDDED)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming job" in resumed.stderr and f"version {stopped_at}" in resumed.stderr
    summary = json.loads((run / "metrics.json").read_text())
    spec = JobSpec.from_json(json.dumps(summary["spec"]))
    total = spec.epochs * spec.n_subsets
    assert stopped_at < total // 2
    assert summary["status"] == "done" and summary["test_accuracy"] >= 0.9
    # every subset of every epoch has exactly one outcome across the interruption
    assert summary["accepted_pushes"] + summary["rejected_pushes"] + summary["invalid_pushes"] == total
    assert summary["versions"] == summary["accepted_pushes"]
    evals = [e for e in summary["evaluations"] if not e.get("final")]
    assert len(evals) >= 55 and all(a["version"] < b["version"] for a, b in zip(evals, evals[1:]))
    # The lr schedule went on from the checkpoint's epoch and version, not anew: every task's
    # lr after the resume is at most the schedule's at the checkpoint (a stale task may still
    # carry the epoch before), far below the start's.
    ceiling = spec.lr_at(max(0, stopped_epoch - 1), stopped_at, live=2)
    after = [spec.lr_at(int(e["epoch"]), int(e["version"]), live=2) for e in evals if e["version"] > stopped_at]
    assert after and max(after) <= ceiling + 1e-12 < spec.lr_at(0, 0, live=2), (ceiling, after[:3])
    assert not (run / "checkpoint.safetensors").exists()  # the model supersedes it
    tuned = bpt("train", "--dataset", str(tmp_path / "more"), "--epochs", "2", "--workers", "2", "--init-from",
                str(run / "model.safetensors"), "--out", str(tmp_path / "tuned"), "--quiet", "--json", env=EMBEDDED)
    assert tuned.returncode == 0, tuned.stderr
    assert json.loads(tuned.stdout.strip().splitlines()[-1])["test_accuracy"] >= 0.9
    model = str(tmp_path / "tuned" / "model.safetensors")
    predicted = bpt("predict", model, "--images", str(tmp_path / "new"), "--out", str(tmp_path / "p.csv"))
    assert predicted.returncode == 0, predicted.stderr
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(rows) == 12 and sum(os.path.basename(r["path"]).startswith(r["class"] + "-") for r in rows) >= 11
    exported = bpt("export", model, "--onnx", str(tmp_path / "m.onnx"))
    assert exported.returncode == 0, exported.stderr
    raw = np.stack([np.asarray(Image.open(r["path"]), np.float32) for r in rows])[:, None]
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    names = json.loads(dict((p.key, p.value) for p in __import__("onnx").load(str(tmp_path / "m.onnx"))
                            .metadata_props)["classes"])
    probabilities = session.run(None, {"images": raw})[0]
    assert [names[c] for c in probabilities.argmax(1)] == [r["class"] for r in rows]


def test_a_cancelled_job_on_a_cluster_resumes_in_place_and_trains_every_subset_once(workers, redis_url, client,
                                                                                      tmp_path):
    """`bpt train --resume JOB`: a cancelled job (after `bpt gc`, which keeps what resuming
    needs) moves back to queued, gets its data staged again and its unfinished waves sent,
    and ends done with one outcome per subset and epoch, its version counting on from where
    it stopped."""
    submitted = bpt("train", "--redis-url", redis_url, "--detach", "--epochs", "30", "--workers", "2",
                    "--dataset", "digits")
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip()
    weights = f"bpt:job:{{{job}}}:weights"
    deadline = time.monotonic() + 120
    while int(client.hget(weights, "version") or 0) < 60:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert bpt("cancel", job, "--redis-url", redis_url).returncode == 0
    time.sleep(1.0)  # pushes in flight are refused ('closed')
    stopped_at = int(client.hget(weights, "version"))
    assert bpt("gc", "--redis-url", redis_url).returncode == 0
    early = bpt("train", "--redis-url", redis_url, "--resume", "no-such-job")
    assert early.returncode == 2 and len(early.stderr.strip().splitlines()) == 1, early.stderr
    # a reason an earlier finish claim kept (flow.finish_job) must not end the resumed job
    client.hset(f"bpt:job:{{{job}}}:state", "finish_reason", "validation accuracy 0.9 reached the target 0.9")
    resumed = bpt("train", "--redis-url", redis_url, "--resume", job, "--json", "--out", str(tmp_path / "out"))
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    spec = json.loads(client.get(f"bpt:job:{{{job}}}:spec"))
    from bpt.plan import partition

    n_subsets = len(partition.subsets(spec["n_train"], spec["subset_size"]))
    assert summary["status"] == "done" and summary["test_accuracy"] >= 0.95
    assert summary["reason"] == "all 30 epochs trained", summary["reason"]
    assert client.hlen(f"bpt:job:{{{job}}}:applied") == 30 * n_subsets  # each subset and epoch once
    assert summary["accepted_pushes"] + summary["rejected_pushes"] + summary["invalid_pushes"] == 30 * n_subsets
    assert summary["versions"] == summary["accepted_pushes"] > stopped_at
    events = [json.loads(e) for e in client.lrange(f"bpt:job:{{{job}}}:events", 0, -1)]
    assert [e["version"] for e in events if e["event"] == "resumed"] == [stopped_at]
    again = bpt("train", "--redis-url", redis_url, "--resume", job)
    assert again.returncode == 2 and "is done" in again.stderr and "--init-from" in again.stderr


def test_class_names_for_arrays_go_into_the_model_file(tmp_path):
    """--class-names gives an .npz's classes names, kept in the model file like an image
    folder's (bpt predict writes them)."""
    from safetensors import safe_open

    names = "zero,one,two,three,four,five,six,seven,eight,nine"
    done = bpt("train", "--dataset", "digits", "--epochs", "1", "--class-names", names, "--quiet", "--out",
               str(tmp_path / "run"), env=EMBEDDED)
    assert done.returncode == 0, done.stderr
    with safe_open(str(tmp_path / "run" / "model.safetensors"), "np") as f:
        assert json.loads(f.metadata()["classes"]) == names.split(",")
