import dataclasses

import pytest
import torch

from bpt.model import registry as models
from bpt.errors import ConfigError
from bpt.job.jobspec import JobSpec


@pytest.mark.parametrize("name,shape", [("digits-cnn", (1, 8, 8)), ("lenet5", (1, 28, 28)), ("resnet-small", (3, 32, 32))])
def test_registry_models_give_one_logit_per_class(name, shape):
    model = models.build_model(name, shape, 7, seed=0)
    assert model(torch.zeros(2, *shape)).shape == (2, 7)


def test_model_for_size_picks_the_natural_model():
    assert [models.model_for_size(s) for s in (8, 28, 32)] == ["digits-cnn", "lenet5", "resnet-small"]


def test_unknown_model_and_wrong_size_are_refused():
    with pytest.raises(ConfigError, match="unknown model 'os.system'"):
        models.build_model("os.system", (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="takes 8x8"):
        models.build_model("digits-cnn", (1, 28, 28), 10)


def spec(**kw):
    return JobSpec(job_id="j1", dataset="digits", model="digits-cnn", input_shape=(1, 8, 8), num_classes=10,
                   n_train=1000, **kw)


def test_spec_json_round_trip():
    s = spec(epochs=3)
    assert JobSpec.from_json(s.to_json()) == s


def test_spec_with_unexpected_or_missing_fields_is_refused():
    import json

    raw = json.loads(spec().to_json())
    raw["module"] = "os"
    with pytest.raises(ConfigError, match="unexpected \\['module'\\]"):
        JobSpec.from_json(json.dumps(raw))
    del raw["module"], raw["epochs"]
    with pytest.raises(ConfigError, match="missing \\['epochs'\\]"):
        JobSpec.from_json(json.dumps(raw))


@pytest.mark.parametrize("field,value", [("epochs", 0), ("workers", -1), ("subset_size", 0)])
def test_spec_refuses_non_positive_numbers(field, value):
    with pytest.raises(ConfigError, match=field):
        spec(**{field: value})


def test_spec_counts_tasks_and_sync_waves():
    s = spec(epochs=2, subset_size=100, workers=3)
    assert s.n_subsets == 10 and s.total_tasks == 20 and s.wave_size is None
    sync = dataclasses.replace(s, rule=dataclasses.replace(s.rule, kind="sync"))
    assert sync.wave_size == 3 and len(sync.waves(0)) == 4


def test_the_guardrail_checks_about_eight_times_an_epoch():
    s = dataclasses.replace(spec(epochs=3, subset_size=1024), n_train=40 * 1024)  # a check every 5 versions
    due = [v for v in range(1, 3 * s.n_subsets + 1) if s.guard_due(v)]
    assert due[:2] == [5, 10] and len(due) == 3 * 8


def test_the_guardrail_checks_less_often_where_a_check_costs_much_of_a_task_but_four_times_an_epoch():
    mid = dataclasses.replace(spec(subset_size=256), n_train=24 * 256)  # 128 scored per 256 trained
    assert mid.guard_interval == 4 and mid.guard_samples / (3 * 4 * 256) <= 0.05  # 6 an epoch, not 8
    costly = dataclasses.replace(spec(subset_size=128), n_train=16 * 128)  # 128 per 128: 7 would do, 4 an epoch
    assert costly.guard_interval == 16 // 4


def test_score_slices_grow_with_the_subset_within_their_bounds():
    small, mid, big = spec(subset_size=128), spec(subset_size=1024), spec(subset_size=8192)
    assert (small.score_samples, mid.score_samples, big.score_samples) == (64, 128, 256)
    assert (small.guard_samples, mid.guard_samples, big.guard_samples) == (128, 256, 256)


@pytest.mark.parametrize("change,message", [
    ({"num_classes": 5000}, "5000 classes is over the limit"),
    ({"input_shape": [3, 40000, 32]}, "input shape"),
    ({"input_shape": [512, 32, 32]}, "input shape"),
])
def test_a_spec_over_the_limits_is_refused_when_a_worker_loads_it_too(change, message):
    """Finding 5 of issue 15: limits were checked only by the submitting client; a spec
    written into Redis by anything else reached the workers unchecked. from_json is how a
    worker loads a job, and it checks the same limits."""
    import json

    raw = json.loads(JobSpec(job_id="j", dataset="digits", model="digits-cnn", input_shape=(1, 8, 8),
                             num_classes=10, n_train=100).to_json())
    with pytest.raises(ConfigError, match=message):
        JobSpec.from_json(json.dumps({**raw, **change}))


def test_the_catalog_names_every_built_in_model_and_no_other():
    """bpt.model.catalog lets `bpt train --help` list the models without importing torch."""
    from bpt.model import catalog
    from bpt.model import registry as models

    assert sorted(catalog.BUILTIN_MODELS) == sorted(models.REGISTRY)


def test_a_spec_has_upper_bounds_and_refuses_a_billion_subsets_without_building_them():
    """Issue 26, finding 9: epochs=1e9, n_train=1e12 and workers=1e9 were accepted, and
    n_train=1e9 in subsets of 1 raised MemoryError. Checked where a spec is built and where a
    worker loads it (from_json builds it the same way)."""
    import json
    import time

    from bpt.job import jobspec
    from bpt.errors import ConfigError

    base = json.loads(spec().to_json())
    for field, value, message in (("epochs", 10**9, "epochs"), ("n_train", 10**12, "n_train"),
                                  ("workers", 10**9, "workers")):
        with pytest.raises(ConfigError, match=f"{message} .* over the limit"):
            jobspec.JobSpec.from_json(json.dumps({**base, field: value}))
    began = time.perf_counter()
    with pytest.raises(ConfigError, match="subsets an epoch"):
        jobspec.JobSpec.from_json(json.dumps({**base, "n_train": 10**9, "subset_size": 1}))
    assert time.perf_counter() - began < 1.0


def test_a_push_reads_the_waves_of_a_few_epochs_not_of_all():
    from bpt.job import lifecycle
    from bpt.workers import flow

    job = spec(epochs=10_000)
    shape = flow.shape(job)
    assert len(shape) == 10_000 and shape[-1] == job.waves(9_999)
    lifecycle.after_push(shape, False, "running", 5, 0, {(5, 0): 3}, 2)
    assert len(shape._epochs) <= 6  # its epoch, the next, the previous, the last two
