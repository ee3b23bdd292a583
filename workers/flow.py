"""How a job moves on: releasing waves of subset tasks, and finishing the job.

There is no coordinator process. The push script counts each wave's finished subsets
atomically, and the task whose push makes a count reach a threshold moves the job on:

- sync: the task that completes a wave commits its round, then releases the next wave (a
  barrier per round is the rule);
- agwu, async: the next wave (the next epoch: these rules have one wave an epoch) is released
  as soon as at most one subset per worker (and a quarter of the wave) is unfinished, so
  workers do not idle while the last of an epoch train (0.6-0.9 s a boundary in a 13 s job).
  A wave is released ahead only once the wave before the current one is complete, so at most
  two are unfinished at a time; and the job finishes when its last two waves are complete.

With sync, a redelivered copy of the completing task (its process died) does the steps again,
each idempotent, and the wave is flagged released last. With the asynchronous rules several
tasks can reach a threshold at once, so one claims the release with SET NX; a crash between
claim and send leaves the wave to the watchdog, which sends the unfinished subsets of a
stalled job again (a subset already applied in that epoch is a counted duplicate). The job is
finished by whichever task sees its last two waves complete while it is still running.
"""

from __future__ import annotations

import time

from bpt import learning, models, training
from bpt.jobspec import JobSpec
from bpt.broker.job_store import FINISHED, JobStore
from bpt.broker.weight_store import WeightStore

from .app import TRAIN_QUEUE, TRAIN_TASK


def release_wave(app, spec: JobSpec, epoch: int, wave: int) -> int:
    subsets = spec.waves(epoch)[wave]
    with app.producer_or_acquire() as producer:
        for subset in subsets:
            app.send_task(TRAIN_TASK, kwargs=task_kwargs(spec.job_id, epoch, wave, subset), queue=TRAIN_QUEUE,
                          producer=producer)
    return len(subsets)


def task_kwargs(job_id: str, epoch: int, wave: int, subset: int) -> dict:
    """Named arguments, so that Flower shows what each task trains and can filter by job."""
    return {"job_id": job_id, "epoch": epoch, "wave": wave, "subset": subset}


def next_wave(spec: JobSpec, epoch: int, wave: int) -> tuple[int, int] | None:
    if wave + 1 < len(spec.waves(epoch)):
        return epoch, wave + 1
    if epoch + 1 < spec.epochs:
        return epoch + 1, 0
    return None


def previous_wave(spec: JobSpec, epoch: int, wave: int) -> tuple[int, int] | None:
    if wave > 0:
        return epoch, wave - 1
    if epoch > 0:
        return epoch - 1, len(spec.waves(epoch - 1)) - 1
    return None


def after_subset(app, store: JobStore, weights: WeightStore, spec: JobSpec, epoch: int, wave: int,
                 done: int, live: int | None = None) -> None:
    """Called after each subset's push (done: the wave's finished subsets; live: the training
    processes in the cluster now, spec.workers if unknown); moves the job on."""
    live = spec.workers if live is None else live
    size = len(spec.waves(epoch)[wave])
    if spec.rule.synchronous:
        # One task completes a wave; a redelivered copy of it (its process died) runs this
        # again, so every step is idempotent and the flag is set last.
        if done < size or store.is_released(epoch, wave):
            return
        result = weights.commit_round(rule=spec.rule, epoch=epoch, wave=wave)
        if result.status == "accepted":
            store.log("round-merged", epoch=epoch, wave=wave, version=result.version)
        if next_wave(spec, epoch, wave) is None:
            finish_job(store, weights, spec)
            return
        _release_after(app, store, spec, epoch, wave)
        store.mark_released(epoch, wave)
        return
    _release_ahead(app, store, spec, epoch, wave, done, live)
    if done < size:
        return
    following = next_wave(spec, epoch, wave)
    if following is not None:  # its release may have waited for this wave to complete
        _release_ahead(app, store, spec, *following, store.done_count(*following), live)
    final = (spec.epochs - 1, len(spec.waves(spec.epochs - 1)) - 1)
    if following is None or following == final:
        last_two = [final, previous_wave(spec, *final) or final]
        if all(_complete(store, spec, *w) for w in last_two) and store.status() not in FINISHED:
            finish_job(store, weights, spec)


def _release_ahead(app, store: JobStore, spec: JobSpec, epoch: int, wave: int, done: int, live: int) -> None:
    """Release the wave after (epoch, wave) if at most `ahead` of its subsets are left and
    the wave before it is complete. Several tasks can get here at once, so one claims the
    release (SET NX); if it dies before sending, the watchdog sends the wave."""
    size = len(spec.waves(epoch)[wave])
    if next_wave(spec, epoch, wave) is None or size - done > ahead(live, size):
        return
    before = previous_wave(spec, epoch, wave)
    if before is not None and not _complete(store, spec, *before):
        return
    if store.claim_release(epoch, wave):
        _release_after(app, store, spec, epoch, wave)


def _release_after(app, store: JobStore, spec: JobSpec, epoch: int, wave: int) -> None:
    following = next_wave(spec, epoch, wave)
    if following[1] == 0:
        store.set_fields(epoch=following[0])
    release_wave(app, spec, *following)


def ahead(live: int, size: int) -> int:
    """How many unfinished subsets of a wave of `size` let the next one out: one per live
    training process, at most a quarter of the wave. Epoch boundaries are where staleness drops; releasing with
    8 of 11 digits subsets left (8 workers) cost AGWU 4 points (96.0% to 91.9%, 2 seeds)."""
    return min(live, size // 4)


def _complete(store: JobStore, spec: JobSpec, epoch: int, wave: int) -> bool:
    return store.done_count(epoch, wave) >= len(spec.waves(epoch)[wave])


def finish_job(store: JobStore, weights: WeightStore, spec: JobSpec) -> None:
    """Evaluate the final global weights on the test split and mark the job done."""
    pulled = weights.pull()
    model = models.build_model(spec.model, spec.input_shape, spec.num_classes)
    training.load_numpy_state(model, pulled.weights)
    loss, accuracy = training.evaluate(model, store.array("x_test"), store.array("y_test"))
    store.add_eval(pulled.version, loss, accuracy)
    warning = learning.verdict(accuracy, store.evals(), spec.num_classes)
    if warning:
        store.log("warning", version=pulled.version, test_accuracy=accuracy, reason=warning)
    store.finish("done", test_accuracy=accuracy, test_loss=loss, version=pulled.version,
                 **({"warning": warning} if warning else {}))
    store.log("finished", version=pulled.version, test_accuracy=accuracy, at=time.time())
    store.drop_staged_data()
    store.drop_bookkeeping()
