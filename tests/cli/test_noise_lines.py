"""What `bpt status` and `bpt report` say of the noise scale, capped or not (pure formatting)."""

from bpt.cli.jobs import status_lines
from bpt.cli.report import summary_markdown


def summary(capped: bool) -> dict:
    return {"job_id": "j", "status": "done", "test_accuracy": 0.99, "epoch": 11, "versions": 36,
            "accepted_pushes": 36, "rejected_pushes": 0, "invalid_pushes": 0, "duplicate_deliveries": 0,
            "staleness_histogram": {}, "wall_seconds": 0, "samples_per_second": 0, "workers": {},
            "spec": {"n_train": 432, "subset_size": 128, "model": "m", "dataset": "d", "rule": {"kind": "normalized"},
                     "epochs": 12, "train": {"batch_size": 32}},
            "noise_scale": {"samples": 158667.5, "workers_that_help": 13, "capped_at_training_set": capped,
                            "training_processes": 3, "pushes_measured": 16}}


def test_a_capped_noise_scale_says_its_workers_are_an_upper_bound():
    status = "\n".join(status_lines(summary(True)))
    assert "samples: at most 13 training processes help" in status
    assert "beyond about 13 training processes, whose batches hold the training set" in summary_markdown(summary(True))
    assert "at most" not in "\n".join(status_lines(summary(False)))
    assert "whose batches" not in summary_markdown(summary(False))
