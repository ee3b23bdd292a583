"""Declarative networks (bpt.model.architecture): the allow-list, typed arguments, shape errors
that name the layer, and the shipped examples."""

import json

import pytest
import torch

from bpt.model import architecture
from bpt.model import registry as models
from bpt.errors import ConfigError
from bpt.job.jobspec import JobSpec

EXAMPLES = {"examples/models/lenet5.toml": ((1, 28, 28), 61_706),
            "examples/models/resnet20.toml": ((3, 32, 32), 272_474),  # He et al.: 0.27 M
            "examples/models/vgg-small.yaml": ((3, 32, 32), 141_354),
            "examples/models/small-cnn16.json": ((3, 16, 16), 85_834)}


def build(layers, shape=(3, 16, 16), classes=10):
    return architecture.build(architecture.canonical({"layers": layers}), shape, classes)


@pytest.mark.parametrize("path", sorted(EXAMPLES))
def test_each_example_builds_and_gives_one_score_per_class(path):
    shape, parameters = EXAMPLES[path]
    net = architecture.build(architecture.canonical(architecture.load_file(path)), shape, 10)
    assert sum(p.numel() for p in net.parameters()) == parameters
    assert net(torch.zeros(3, *shape)).shape == (3, 10)


def test_the_declarative_lenet5_has_the_builtin_ones_layout():
    declared = architecture.build(architecture.canonical(architecture.load_file("examples/models/lenet5.toml")),
                                  (1, 28, 28), 10)
    builtin = models.build_model("lenet5", (1, 28, 28), 10)
    assert [p.shape for p in declared.parameters()] == [p.shape for p in builtin.parameters()]


def test_any_input_size_and_channel_count():
    net = build([{"type": "Conv2d", "out_channels": 4, "kernel_size": 3}, {"type": "AdaptiveAvgPool2d", "output_size": 1},
                 {"type": "Flatten"}, {"type": "Linear", "out_features": "classes"}], shape=(5, 17, 40), classes=3)
    assert net(torch.zeros(2, 5, 17, 40)).shape == (2, 3)


@pytest.mark.parametrize("layers, message", [
    ([{"type": "Lambda"}], "layers[0]: layer type 'Lambda' is not allowed"),
    ([{"type": "Conv2d", "out_channels": 4}], "layers[0] (Conv2d): missing argument kernel_size"),
    ([{"type": "Conv2d", "out_channels": 4, "kernel_size": 3, "padding_mode": "circular"}],
     "layers[0] (Conv2d): unknown argument(s) padding_mode"),
    ([{"type": "Conv2d", "out_channels": "4", "kernel_size": 3}], "layers[0] (Conv2d) out_channels: must be an integer"),
    ([{"type": "Dropout", "p": 1.5}], "layers[0] (Dropout) p: must be a number in [0, 1)"),
    ([{"type": "Linear", "out_features": 10}], "layers[0] (Linear): needs a flat input, got shape (3, 16, 16)"),
    ([{"type": "Flatten"}, {"type": "BatchNorm2d"}], "layers[1] (BatchNorm2d): needs an image input"),
    ([{"type": "Conv2d", "out_channels": 4, "kernel_size": 32}], "layers[0] (Conv2d): does not fit its input of shape (3, 16, 16)"),
    ([{"type": "Residual", "layers": [{"type": "Conv2d", "out_channels": 8, "kernel_size": 1}]}],
     "layers[0] (Residual): its layers give shape (8, 16, 16) but the skip path gives (3, 16, 16); add a projection"),
    ([{"type": "Residual", "layers": [{"type": "Nope"}]}], "layers[0].layers[0]: layer type 'Nope' is not allowed"),
    ([{"type": "GroupNorm", "num_groups": 2}], "layers[0] (GroupNorm): 2 groups do not divide 3 channels"),
    ([], "layers: must be a non-empty list"),
    ([{"type": "Conv2d", "out_channels": 16384, "kernel_size": 1024}], "parameters, over the limit"),
    ([{"type": "ReLU", 3: 4}], "a layer is a table of named arguments"),
])
def test_a_bad_network_is_refused_naming_the_layer(layers, message):
    with pytest.raises(ConfigError) as e:
        build(layers)
    assert message in str(e.value)


def test_residual_with_projection_adds_the_projected_input():
    net = build([{"type": "Residual", "layers": [{"type": "Conv2d", "out_channels": 8, "kernel_size": 3, "stride": 2, "padding": 1}],
                  "projection": [{"type": "Conv2d", "out_channels": 8, "kernel_size": 1, "stride": 2}]}])
    assert net(torch.zeros(1, 3, 16, 16)).shape == (1, 8, 8, 8)


def test_building_does_not_move_batchnorm_statistics():
    net = build([{"type": "Conv2d", "out_channels": 4, "kernel_size": 3}, {"type": "BatchNorm2d"}])
    assert float(net[1].running_mean.abs().sum()) == 0 and int(net[1].num_batches_tracked) == 0
    assert net.training


def test_the_three_file_formats_read_the_same(tmp_path):
    layers = [{"type": "Conv2d", "out_channels": 4, "kernel_size": 3}, {"type": "Flatten"},
              {"type": "Linear", "out_features": "classes"}]
    (tmp_path / "m.json").write_text(json.dumps({"layers": layers}))
    (tmp_path / "m.yaml").write_text("layers:\n" + "".join(f"  - {json.dumps(layer)}\n" for layer in layers))
    (tmp_path / "m.toml").write_text('layers = [\n{type = "Conv2d", out_channels = 4, kernel_size = 3},\n'
                                     '{type = "Flatten"},\n{type = "Linear", out_features = "classes"},\n]\n')
    got = {architecture.canonical(architecture.load_file(str(tmp_path / f"m.{ext}"))) for ext in ("json", "yaml", "toml")}
    assert len(got) == 1


@pytest.mark.parametrize("text, message", [
    ("layers = [", "is not valid"),
    ("name = 'x'", "needs a list `layers`"),
])
def test_a_broken_model_file_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        architecture.canonical(architecture.load_file(str(path)))


def test_yaml_objects_are_not_constructed(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("layers: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="is not valid"):
        architecture.load_file(str(path))


def test_the_job_spec_carries_the_network_and_checks_it_when_a_worker_loads_it():
    arch = architecture.canonical(architecture.load_file("examples/models/small-cnn16.json"))
    spec = JobSpec("j", "d", "small-cnn16", (3, 16, 16), 10, 100, architecture=arch)
    assert JobSpec.from_json(spec.to_json()) == spec
    tampered = json.loads(spec.to_json())
    tampered["architecture"] = json.dumps([{"type": "Exec", "code": "import os"}])
    with pytest.raises(ConfigError, match="not allowed"):
        JobSpec.from_json(json.dumps(tampered))
