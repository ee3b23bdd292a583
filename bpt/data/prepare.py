"""Turning a user's choices into a checked job: data loaded, model chosen and tried on a
sample, spec filled with sensible defaults, initial weights drawn. Everything that can be
wrong with a job is found here, before anything touches Redis."""

from __future__ import annotations

import dataclasses
import json
import os

import torch

from bpt.model import architecture
from bpt.data import datasets
from bpt.model import registry as models
from bpt.model import plugins
from bpt.train import training
from bpt.model.architecture import first_line
from bpt.errors import ConfigError, DataError
from bpt.job.jobspec import MAX_CLASSES, JobSpec, new_job_id
from bpt.plan.partition import default_subset_size  # noqa: F401 - where callers find it
from bpt.train import merge
from bpt.train.merge import MergeRule

DEFAULT_EPOCHS = {"digits": 20}
DEFAULT_EPOCHS_OTHER = 5


@dataclasses.dataclass(frozen=True)
class JobChoices:
    dataset: datasets.DatasetSpec = datasets.DatasetSpec()
    model: str | None = None
    epochs: int | None = None
    subset_size: int | None = None
    batch_size: int = 32
    lr: float | None = None  # default: the model's (bpt.model.registry.default_lr)
    momentum: float = 0.9
    rule: str = merge.DEFAULT_RULE
    alpha: float | None = None  # default: default_alpha(rule, gamma)
    gamma: float = 0.5
    s_max: int | None = None
    eval_every: int = 0
    seed: int = 0
    workers: int = 2
    inner: str = "auto"
    partition: str = "greedy"
    guardrail: float = 0.05
    optimizer: str = "sgd"
    weight_decay: float = 0.0
    lr_schedule: str | None = None  # default: the model's (bpt.model.registry.default_recipe)
    lr_scaling: str | None = None  # default: the model's
    warmup_epochs: float = 0.0
    step_every: int = 0
    label_smoothing: float = 0.0
    augment: tuple[str, ...] = ()
    target_accuracy: float = 0.0
    top_k: int = 0
    init_from: str | None = None  # a .safetensors of the model's layout to start from (fine-tuning)
    patience: int = 0  # evaluations without a better validation accuracy before the job finishes; 0: off
    class_names: tuple[str, ...] = ()  # --class-names: the classes' names in label order (arrays have none)


def default_alpha(rule: str, gamma: float) -> float:
    """AGWU's contribution scale when none is given: 1 - gamma.

    Workers that pulled the same version push deltas that point the same way; AGWU applies
    them with weights 1, gamma, gamma^2, ... (by staleness), which sum to 1 / (1 - gamma).
    Scaling by 1 - gamma makes such a group count as one full step (q = 1), as a synchronous
    round would. With alpha = 1, three workers in step trained the digits-aug CNN to chance
    accuracy in 4 of 5 runs (docs/design.md). normalized, plain async and sync keep alpha = 1
    (normalized already divides by the live workers).
    """
    return 1.0 - gamma if rule == "agwu" and gamma < 1 else 1.0


def prepare(choices: JobChoices, job_id: str | None = None):
    """Return (spec, dataset, initial weights) or raise ConfigError / DataError."""
    for name in ("epochs", "subset_size", "s_max"):
        value = getattr(choices, name)
        if value is not None and value < (0 if name == "s_max" else 1):
            raise ConfigError(f"{name.replace('_', ' ')} must be a positive integer, got {value}")
    data = datasets.load(choices.dataset)
    if data.num_classes > MAX_CLASSES or (not data.shared and data.y_train.max() >= data.num_classes):
        raise DataError(f"labels out of range for {data.num_classes} classes")
    model_name, architecture_json, plugin_version = resolve_model(choices.model, data.input_shape)
    model = models.build_model(model_name, data.input_shape, data.num_classes, seed=choices.seed,
                               architecture=architecture_json, plugin=plugin_version)
    _try_forward(model, model_name, data)
    if choices.init_from:
        training.load_numpy_state(model, initial_weights(choices.init_from, training.state_to_numpy(model), model_name))
    recipe = models.default_recipe(model_name)
    spec = JobSpec(
        job_id=job_id or new_job_id(),
        dataset=choices.dataset.name,
        model=model_name,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        n_train=data.n_train,
        epochs=choices.epochs or DEFAULT_EPOCHS.get(choices.dataset.name, DEFAULT_EPOCHS_OTHER),
        subset_size=choices.subset_size or default_subset_size(data.n_train),
        train=training.TrainParams(choices.batch_size, recipe[0] if choices.lr is None else choices.lr,
                                   choices.momentum, choices.weight_decay, choices.optimizer,
                                   choices.lr_schedule or recipe[1], choices.warmup_epochs, choices.step_every,
                                   choices.label_smoothing, tuple(choices.augment), choices.lr_scaling or recipe[2]),
        # s_max None: twice the live training processes, read at every push (bpt.train.merge)
        rule=MergeRule(choices.rule, default_alpha(choices.rule, choices.gamma) if choices.alpha is None else choices.alpha,
                       choices.gamma, choices.s_max),
        workers=choices.workers,
        eval_every=choices.eval_every,
        seed=choices.seed,
        inner=choices.inner,
        partition=choices.partition,
        guardrail=choices.guardrail,
        architecture=architecture_json,
        plugin=plugin_version,
        layout=models.layout(model),
        target_accuracy=choices.target_accuracy,
        top_k=choices.top_k,
        patience=choices.patience,
        class_names=class_names_for(choices.class_names, tuple(getattr(data, "class_names", ())), data.num_classes),
        data_source=data_source_json(choices.dataset),  # image folders' (array directories have none)
        **({"data_path": data.path, "data_mean": data.arrays.mean, "data_std": data.arrays.std} if data.shared else
           {"data_mean": data.normalisation[0], "data_std": data.normalisation[1]} if data.normalisation else {}),
    )
    return spec, data, training.state_to_numpy(model)


def class_names_for(given: tuple[str, ...], found: tuple[str, ...], num_classes: int) -> tuple[str, ...]:
    """The names the model file keeps: --class-names (for arrays, which have none), else an
    image folder's class folders; given names must match their count and a folder's names."""
    if not given:
        return found
    if len(given) != num_classes:
        raise ConfigError(f"--class-names gives {len(given)} names for {num_classes} classes")
    if len(set(given)) != len(given) or not all(n.strip() for n in given):
        raise ConfigError("--class-names must be distinct, non-empty names")
    if found and tuple(given) != found:
        raise ConfigError(f"--class-names {','.join(given)} differ from the image folder's classes {','.join(found)}")
    return tuple(given)


def data_source_json(dataset) -> str:
    """The DatasetSpec as JSON with absolute paths: `bpt train --resume` reloads the same data
    from it, from whichever directory it is run."""
    fields = dataclasses.asdict(dataset)
    for name in ("name", "val", "test"):
        value = fields[name]
        if value and (name != "name" or dataset.is_file):
            fields[name] = os.path.abspath(value)
    return json.dumps(fields, sort_keys=True)


def reload_data(spec):
    """The data set a job was submitted with, loaded again from its data_source, checked to
    be the same shape; one-line DataError otherwise."""
    import json

    if not spec.data_source:
        raise DataError(f"job {spec.job_id} was submitted before bpt recorded where its data comes from; "
                        "it cannot be resumed (start again, or --init-from its last model)")
    source = datasets.DatasetSpec(**json.loads(spec.data_source))
    data = datasets.load(source)
    if (data.n_train, tuple(data.input_shape), data.num_classes) != (spec.n_train, tuple(spec.input_shape),
                                                                     spec.num_classes):
        raise DataError(f"the data at {source.name} is no longer the job's: {data.n_train} samples of "
                        f"{tuple(data.input_shape)} in {data.num_classes} classes, the job had {spec.n_train} of "
                        f"{tuple(spec.input_shape)} in {spec.num_classes}")
    return data


def initial_weights(path: str, layout: dict, model_name: str) -> dict:
    """The weights of a .safetensors file to start from, checked against the model's layout:
    the same tensor names and shapes (values cast to the model's dtypes), or one line naming
    the first difference."""
    import numpy as np

    if not os.path.isfile(path):
        raise DataError(f"--init-from {path!r} does not exist")
    try:
        from safetensors.numpy import load_file

        weights = load_file(path)
    except Exception as e:  # the library raises its own error types for a bad header
        raise DataError(f"--init-from {path!r} is not a readable .safetensors file ({type(e).__name__})") from e
    missing, extra = sorted(set(layout) - set(weights)), sorted(set(weights) - set(layout))
    if missing or extra:
        raise ConfigError(f"--init-from {path!r} does not fit model {model_name}: "
                          + "; ".join(part for part in (missing and f"missing {', '.join(missing[:3])}",
                                                        extra and f"unexpected {', '.join(extra[:3])}") if part))
    for name, array in layout.items():
        if weights[name].shape != array.shape:
            raise ConfigError(f"--init-from {path!r} does not fit model {model_name}: {name} is "
                              f"{tuple(weights[name].shape)} there, {tuple(array.shape)} in the model")
        if not np.isfinite(weights[name]).all() and np.issubdtype(weights[name].dtype, np.floating):
            raise DataError(f"--init-from {path!r}: {name} holds NaN or infinite values")
    return {name: weights[name].astype(layout[name].dtype, copy=False) for name in layout}


MODEL_FILES = (".toml", ".json", ".yaml", ".yml")


def resolve_model(choice: str | None, input_shape: tuple[int, int, int]) -> tuple[str, str, str]:
    """(name, architecture JSON, plug-in version) for --model: a registry name, a model file
    (a declarative network), an installed plug-in DIST:ENTRY, or None (the registry's model
    for this image size)."""
    if choice is None:
        if input_shape[1] != input_shape[2]:
            raise ConfigError(f"no model in the registry takes {input_shape[1]}x{input_shape[2]} inputs; describe "
                              "your own network in a model file (--model my_cnn.toml, see examples/models/)")
        return models.model_for_size(input_shape[1]), "", ""
    if choice.endswith(MODEL_FILES):
        description = architecture.load_file(choice)
        name = str(description.get("name") or os.path.splitext(os.path.basename(choice))[0])[:64]
        return name, architecture.canonical(description), ""
    if plugins.is_reference(choice):
        return choice, "", plugins.version_of(choice)
    return choice, "", ""


def _try_forward(model: torch.nn.Module, name: str, data: datasets.Dataset) -> None:
    try:
        with torch.no_grad():
            out = model.eval()(torch.from_numpy(data.sample(2)))
    except RuntimeError as e:
        raise DataError(f"images of shape {data.input_shape} do not fit model {name!r}: {first_line(e)}") from e
    if out.dim() != 2:
        raise DataError(f"model {name!r} gives outputs of shape {tuple(out.shape[1:])} per image; it must give one "
                        f"score per class, ({data.num_classes},): end it with Flatten and Linear")
    if out.shape[1] != data.num_classes:
        raise DataError(f"model {name!r} gives {out.shape[1]} outputs for {data.num_classes} classes")
