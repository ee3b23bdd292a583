"""How many workers help (pure): the gradient noise scale from statistics the workers measure.

McCandlish et al. (2018): with per-example gradient covariance S and true gradient G, the
expected squared norm of a batch-B gradient is |G|^2 + tr(S) / B, and B_noise = tr(S) / |G|^2
is about the critical batch: below it a K times larger batch needs about the same number of
steps (K times fewer samples per worker: speed-up), above it about K times more samples (no
speed-up). Each task measures, on some of its batches, the gradient of each half and of the
whole batch at the same weights (the batch's gradient is their mean: training costs the
same): the halves' mean |g_b|^2 (batch b) and the batch's |g_2b|^2; two batch sizes give
both unknowns:

    |G|^2 = (B |G_B|^2 - b |G_b|^2) / (B - b)        tr(S) = (|G_b|^2 - |G_B|^2) / (1/b - 1/B)

Averaged over the job's latest pushes (each from gradients a task measured along its own short
trajectory, not from deltas that start at different weights): the noise scale grows as
training goes on (Fashion-MNIST, LeNet-5, one process: 88 samples over the first epoch, 274
over the second, 550-930 from the fourth on), so an average over the whole job is held down
by its first epoch (76 samples at 4 workers over 2 epochs, which warned that 2 workers help
where DDP's recipe gains up to 16: docs/scaling.md). bpt's averaging rules merge K
pushes into one step of a K-fold batch, so about B_noise / b workers help; more add samples,
not speed.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class GradStats:
    """What one task measured: `small` the mean |g_b|^2 of batches of `batch` samples, `big`
    the mean |mean g|^2 over groups of `batches` of them (training.GradientMeter: the two
    halves of a batch)."""

    batches: int
    batch: int
    small: float
    big: float


@dataclasses.dataclass(frozen=True)
class NoiseEstimate:
    noise_batch: float  # B_noise, in samples
    workers: int  # about how many workers (each of `batch` samples a step) still help
    training_samples: int = 0  # set by `within`: the training set the workers were capped at

    def message(self) -> str:
        cap = (f" (at most: their batches hold the {self.training_samples} training samples)"
               if self.training_samples else "")
        return (f"gradient noise scale about {self.noise_batch:.0f} samples: beyond about {self.workers} "
                f"worker{'s' if self.workers != 1 else ''}{cap}, more workers add samples, not speed")

    def within(self, n_train: int, step_batch: int) -> "NoiseEstimate":
        """At most the workers whose batches together hold the training set. Once a model fits
        its training data the gradient's signal falls under its noise and B_noise runs to any
        size (a 432-image folder measured 158,668 samples, "4,958 workers"); K pushes merged
        are a batch of K x step_batch, and no batch holds more than the training set, so more
        workers than n_train / step_batch cannot be a larger batch, only more samples."""
        most = max(1, n_train // step_batch) if n_train > 0 and step_batch > 0 else self.workers
        if self.workers <= most:
            return self
        return dataclasses.replace(self, workers=most, training_samples=n_train)


def estimate(small: float, big: float, batch: int, big_batch: float, step_batch: float | None = None
             ) -> NoiseEstimate | None:
    """From the mean per-batch |g|^2 (`small`, batches of `batch`) and the mean |mean g|^2
    (`big`, over `big_batch` samples); None when the statistics cannot say (a task of one
    batch, or noise that swamped the signal). Workers that help: B_noise over the batch one
    worker steps on (`step_batch`, default big_batch): K workers merged are a K-fold one."""
    if not big_batch > batch > 0:
        return None
    g2 = (big_batch * big - batch * small) / (big_batch - batch)
    trace = (small - big) / (1 / batch - 1 / big_batch)
    if not (math.isfinite(g2) and math.isfinite(trace)) or g2 <= 0 or trace <= 0:
        return None
    noise = trace / g2
    if not math.isfinite(noise):
        return None
    return NoiseEstimate(noise, max(1, round(noise / (step_batch or big_batch))))


FIELDS = ("pushes", "small", "big", "batch", "big_batch")
LATEST_PUSHES = 16  # the latest estimate sums epochs, newest first, until this many pushes (and an estimate)


def usable(stats: GradStats | None) -> bool:
    """Whether a task's statistics can be summed: finite and positive (a float32 squared norm
    can overflow while the delta stays finite; one such task must not spoil the job's sums)."""
    return stats is not None and stats.batch > 0 and stats.batches > 0 and all(
        math.isfinite(v) and v > 0 for v in (stats.small, stats.big))


def from_sums(sums: dict, n_train: int = 0) -> NoiseEstimate | None:
    """The estimate from a job's summed statistics (JobStore.gradient_sums): the job's latest
    (`latest_sums`), the mean of each measured quantity over those pushes, then `estimate`,
    its workers capped at the training set of n_train samples (NoiseEstimate.within; 0: not
    capped). The big batch measured is a worker's whole batch (its halves are the small one),
    so it is also the batch a worker steps on."""
    return _estimate(latest_sums(sums), n_train)


def latest_sums(sums: dict) -> dict:
    """The sums of the latest epochs (fields "<name>:<epoch>"), newest first, until they hold
    LATEST_PUSHES pushes and give an estimate, else all of them; sums without epochs (kept
    before they were kept by epoch) as they are."""
    epochs = sorted(measured_epochs(sums), reverse=True)
    if not epochs:
        return {k: sums[k] for k in FIELDS if k in sums}
    taken = dict.fromkeys(FIELDS, 0.0)
    for epoch in epochs:
        for name, value in epoch_sums(sums, epoch).items():
            taken[name] += value
        if taken["pushes"] >= LATEST_PUSHES and _estimate(taken) is not None:
            break
    return taken


def measured_epochs(sums: dict) -> set[int]:
    """The epochs a job's sums hold (fields "<name>:<epoch>")."""
    return {int(k.split(":", 1)[1]) for k in sums if ":" in k}


def epoch_sums(sums: dict, epoch: int) -> dict:
    """One epoch's sums, by the plain field names `from_sums` reads."""
    return {name: sums.get(f"{name}:{epoch}", 0.0) for name in FIELDS}


def _estimate(sums: dict, n_train: int = 0) -> NoiseEstimate | None:
    n = sums.get("pushes", 0)
    if n < 1:
        return None
    step_batch = sums["big_batch"] / n
    found = estimate(sums["small"] / n, sums["big"] / n, int(round(sums["batch"] / n)), step_batch)
    return found.within(n_train, int(round(step_batch))) if found else None


def too_few_subsets(subsets_per_epoch: int, workers: int) -> str | None:
    """A submit-time warning: an epoch of fewer subsets than workers leaves workers idle at
    every epoch's end (or, with rounds, makes rounds wait)."""
    if subsets_per_epoch < workers:
        return (f"an epoch has {subsets_per_epoch} subsets for {workers} training processes: some idle at every "
                "epoch's end; a smaller --subset-size gives each work")
    return None
