"""A job spec: everything a worker needs to train its subsets, as plain JSON.

It names a model from the registry and describes staged data by shape only; it never
carries code. `from_json` refuses unknown or missing fields so that a tampered or
mismatched spec fails loudly instead of half-working.
"""

from __future__ import annotations

import dataclasses
import json
import math
import secrets
import time

from bpt.plan import partition
from bpt.model import plugins
from bpt.errors import ConfigError
from bpt.train.merge import MergeRule
from bpt.job.recipe import STRATEGIES, TrainParams

DEFAULT_EPOCHS = 15
DEFAULT_SUBSET_SIZE = 128
MAX_BATCH_SIZE = 65_536
# Limits on what a job may ask of a worker. Checked where the spec is built, at submit and
# again by every worker that loads the job (from_json builds it the same way): a spec
# written to Redis by anything else than `bpt train` cannot make workers build a model
# they cannot hold.
MAX_CLASSES = 1000
MAX_CHANNELS = 64
MAX_SIDE = 1024  # pixels, height or width
MAX_EPOCHS = 10_000
MAX_SAMPLES = 10**9  # training samples
MAX_SUBSETS = 1_000_000  # per epoch: a wave lists them all
MAX_WORKERS = 100_000  # training processes at submit (a sync round's size)
PARTITIONS = ("greedy", "idpa", "static")
GUARD_CHECKS = (4, 8)  # accuracy guardrail checks per epoch, at least and at most ...
GUARD_SHARE = 0.05  # ... and between them, as few as cost at most this share of the training between two
# Validation samples a task scores its subnetwork on (AGWU's accuracy weight), and the
# guardrail the global model on. A forward pass costs about a third of a training step, so a
# slice of subset/8 costs about 4% of a task; a slice of subset/4 cost 8% at every size and
# 17% of the ResNet benchmark's 250-sample tasks. Sizes are capped: a slice's noise depends on
# its own size, not on the subset's. The guardrail's slice is larger (it acts on three low
# checks in a row, and noise alone must not get there) and scores 4 to 8 times an epoch.
SCORE_SAMPLES = (64, 256)  # min, max
GUARD_SAMPLES = (128, 256)


def new_job_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


@dataclasses.dataclass(frozen=True)
class JobSpec:
    job_id: str
    dataset: str
    model: str
    input_shape: tuple[int, int, int]
    num_classes: int
    n_train: int
    epochs: int = DEFAULT_EPOCHS
    subset_size: int = DEFAULT_SUBSET_SIZE
    train: TrainParams = TrainParams()
    rule: MergeRule = MergeRule()
    workers: int = 2  # training processes at submit: sizes sync rounds; the rest follows the live count
    eval_every: int = 0  # evaluate the test split every this many versions; 0: once per epoch
    seed: int = 0
    inner: str = "auto"  # inner-layer strategy (bpt.train.inner); a worker's --inner overrides it
    partition: str = "greedy"  # greedy: waves on a shared queue; idpa or static: the scheduler task
    guardrail: float = 0.05  # tighten the rule when validation accuracy falls this much (bpt.train.guardrail); 0: off
    architecture: str = ""  # a declarative network: canonical JSON of its layers (bpt.model.architecture)
    plugin: str = ""  # model is an installed plug-in DIST:ENTRY: the distribution's version (bpt.model.plugins)
    layout: str = ""  # models.layout of the model built at submit: workers must build the same
    target_accuracy: float = 0.0  # finish once the global model reaches this on the validation split; 0: off
    top_k: int = 0  # also report top-k accuracy in evaluations (k > 1); 0: off
    patience: int = 0  # finish after this many evaluations without a better validation accuracy; 0: off
    class_names: tuple[str, ...] = ()  # image folders: the classes' names in label order (model metadata)
    data_path: str = ""  # an array directory the workers read (bpt.data.shared_data); "": data staged in Redis
    data_mean: tuple[float, ...] = ()  # its per-channel normalisation, measured at submit
    data_std: tuple[float, ...] = ()
    data_source: str = ""  # JSON of the DatasetSpec it was loaded from (absolute paths): what --resume reloads

    def __post_init__(self):
        for name in ("epochs", "subset_size", "workers", "n_train", "num_classes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name, bound in (("epochs", MAX_EPOCHS), ("n_train", MAX_SAMPLES), ("workers", MAX_WORKERS)):
            if getattr(self, name) > bound:  # issue 26, finding 9: epochs=1e9 and n_train=1e12 were taken
                raise ConfigError(f"{name} {getattr(self, name)} is over the limit of {bound}")
        if -(-self.n_train // self.subset_size) > MAX_SUBSETS:
            raise ConfigError(f"{self.n_train} samples in subsets of {self.subset_size} is over {MAX_SUBSETS} subsets an "
                              "epoch; use a larger --subset-size")
        if self.num_classes > MAX_CLASSES:
            raise ConfigError(f"{self.num_classes} classes is over the limit of {MAX_CLASSES}")
        if len(self.input_shape) != 3 or not (1 <= self.input_shape[0] <= MAX_CHANNELS
                                              and all(1 <= side <= MAX_SIDE for side in self.input_shape[1:])):
            raise ConfigError(f"input shape {tuple(self.input_shape)} is outside (1..{MAX_CHANNELS} channels, "
                              f"1..{MAX_SIDE} pixels a side)")
        if self.eval_every < 0:
            raise ConfigError(f"eval_every must be >= 0, got {self.eval_every}")
        if not 1 <= self.train.batch_size <= MAX_BATCH_SIZE:
            raise ConfigError(f"batch size must be between 1 and {MAX_BATCH_SIZE}, got {self.train.batch_size}")
        if not self.train.lr > 0 or not 0 <= self.train.momentum < 1:
            raise ConfigError("lr must be positive and momentum in [0, 1)")
        self.train.check()
        if self.inner == "tasks" and self.train.optimizer != "sgd":
            raise ConfigError(f"the tasks inner strategy implements SGD only, not {self.train.optimizer}; use --inner torch")
        if not all(isinstance(n, str) for n in self.class_names):
            raise ConfigError("class names must be strings")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ConfigError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        if not 0 <= self.patience <= 10_000:
            raise ConfigError(f"patience must be 0 (off) to 10000 evaluations, got {self.patience}")
        if not 0 <= self.target_accuracy <= 1:
            raise ConfigError(f"target accuracy must be in [0, 1] (0: off), got {self.target_accuracy}")
        if self.top_k < 0 or self.top_k == 1 or self.top_k > self.num_classes:
            raise ConfigError(f"top-k must be 0 (off) or 2..{self.num_classes} classes, got {self.top_k}")
        if not 0 <= self.guardrail < 1:
            raise ConfigError(f"guardrail must be in [0, 1), got {self.guardrail}")
        if self.inner not in STRATEGIES:
            raise ConfigError(f"unknown inner strategy {self.inner!r}; choose one of {', '.join(STRATEGIES)}")
        if self.partition not in PARTITIONS:
            raise ConfigError(f"unknown partition {self.partition!r}; choose one of {', '.join(PARTITIONS)}")
        if self.partition != "greedy" and self.rule.synchronous:
            raise ConfigError("the sync rule runs in rounds on the shared queue: use it with --partition greedy")
        if self.architecture:
            try:
                layers = json.loads(self.architecture)
            except ValueError as e:
                raise ConfigError(f"the job's network description is not JSON: {e}") from e
            from bpt.model import architecture  # torch: only where a spec names its layers

            architecture.parse(layers)
        elif plugins.is_reference(self.model):
            if not self.plugin:
                raise ConfigError(f"plug-in model {self.model} needs its version in the job spec")
        elif self.model not in _registry():
            raise ConfigError(f"unknown model {self.model!r}; choose one of {', '.join(sorted(_registry()))}")

    def progress(self, epoch: int, version: int, wave: int = 0, start: int | None = None) -> float:
        """The job's global progress in [0, 1] for a task of `epoch` that pulled `version`:
        where the task sits inside its epoch, by what the task knows. Asynchronous greedy: one
        version is one subset, so the version places it; sync rounds: its wave among the
        epoch's waves; IDPA and static ranges (handed out in index order): its first row."""
        if self.partition != "greedy":
            within = (start or 0) / self.n_train
        elif self.rule.synchronous:
            within = wave / max(1, len(self.waves(epoch)))
        else:
            within = version / self.n_subsets - epoch
        return min(1.0, (epoch + min(1.0, max(0.0, within))) / self.epochs)

    def lr_at(self, epoch: int, version: int, wave: int = 0, start: int | None = None, live: int = 1) -> float:
        """A task's learning rate: the schedule at the job's progress, times sqrt(K) under
        lr_scaling "sqrt" (bpt.train.schedule.lr_scale)."""
        from bpt.train.schedule import lr_factor, lr_scale

        k = self.workers if self.rule.synchronous else live
        return self.train.lr * lr_scale(self.train.lr_scaling, self.rule.kind, k) * lr_factor(
            self.train.lr_schedule, self.progress(epoch, version, wave, start), self.epochs, self.train.warmup_epochs,
            self.train.step_every)

    @property
    def subsets(self) -> list[tuple[int, int]]:
        return partition.subsets(self.n_train, self.subset_size)

    @property
    def n_subsets(self) -> int:
        return len(self.subsets)

    @property
    def wave_size(self) -> int | None:
        return self.workers if self.rule.synchronous else None

    @property
    def eval_interval(self) -> int:
        return self.eval_every or self.n_subsets

    @property
    def guard_interval(self) -> int:
        """Versions between two checks of the accuracy guardrail, on its own schedule (tied to
        the test evaluations, a job that evaluated rarely went unguarded and plain async
        collapsed in its first epoch). 8 checks an epoch cost 8% of the ResNet benchmark's
        small epochs (a forward pass costs about a third of a training step), so fewer where a
        check costs more than GUARD_SHARE of the training between two; but at least 4: with
        1.6 an epoch, plain async on digits at 4 workers recovered only to 93.6%, not 97.8%."""
        by_cost = math.ceil(self.guard_samples / (3 * GUARD_SHARE * self.subset_size))
        fewest, most = GUARD_CHECKS
        return max(1, self.n_subsets // most, min(by_cost, self.n_subsets // fewest))

    def guard_due(self, version: int) -> bool:
        return version % self.guard_interval == 0

    @property
    def score_samples(self) -> int:
        return _clamp(self.subset_size // 8, *SCORE_SAMPLES)

    @property
    def guard_samples(self) -> int:
        return _clamp(self.subset_size // 4, *GUARD_SAMPLES)

    def waves(self, epoch: int) -> list[list[int]]:
        return partition.waves(self.n_subsets, epoch, self.seed, self.wave_size)

    @property
    def total_tasks(self) -> int:
        return self.epochs * self.n_subsets

    @property
    def total_waves(self) -> int:
        """The waves of the whole job: under sync its rounds, and so its versions."""
        return sum(len(self.waves(e)) for e in range(self.epochs))

    def to_json(self) -> str:
        fields = dataclasses.asdict(self)
        for name in ("patience", "class_names", "data_source"):  # unset: a worker of the version before them reads it too
            if not fields[name]:
                del fields[name]
        return json.dumps(fields, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "JobSpec":
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ConfigError("a job spec must be a JSON object")
        raw.setdefault("patience", 0)  # a spec from before early stopping
        raw["class_names"] = tuple(raw.get("class_names", ()))  # ... or before class names
        raw.setdefault("data_source", "")  # ... or before --resume
        expect = {f.name for f in dataclasses.fields(cls)}
        if set(raw) != expect:
            extra, missing = sorted(set(raw) - expect), sorted(expect - set(raw))
            raise ConfigError(f"job spec fields do not match: unexpected {extra}, missing {missing}")
        try:
            raw["input_shape"] = tuple(raw["input_shape"])
            raw["data_mean"], raw["data_std"] = tuple(raw["data_mean"]), tuple(raw["data_std"])
            train = dict(raw["train"])
            train.setdefault("lr_scaling", "none")  # a spec from before sqrt(K) scaling trains as it was submitted
            if isinstance(train.get("augment"), list):
                train["augment"] = tuple(train["augment"])
            raw["train"] = TrainParams(**train)
            raw["rule"] = MergeRule(**raw["rule"])
            return cls(**raw)
        except TypeError as e:
            raise ConfigError(f"job spec is malformed: {e}") from e


def _clamp(value: int, low: int, high: int) -> int:
    return min(high, max(low, value))


def _registry():
    """The built-in models' names (bpt.model.registry imports torch: only when a spec is checked)."""
    from bpt.model.registry import REGISTRY

    return REGISTRY
