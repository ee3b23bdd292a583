"""How a job moves on: releasing waves of subset tasks, and finishing the job.

There is no coordinator process. The task that completes the last subset of a wave
(the push script counts them atomically) releases the next wave, or finishes the job
after the last one. Releasing is idempotent enough: tasks are sent before the wave is
marked released, so a crash in between can only send a wave twice, and a subset already
applied in that epoch is skipped.
"""

from __future__ import annotations

import time

from bpt import models, training
from bpt.jobspec import JobSpec
from bpt.broker.job_store import JobStore
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


def after_subset(app, store: JobStore, weights: WeightStore, spec: JobSpec, epoch: int, wave: int,
                 done: int) -> None:
    """Called after each subset's push; moves the job on if this was the wave's last."""
    if done < len(spec.waves(epoch)[wave]) or not store.claim_release(epoch, wave):
        return
    if spec.rule.synchronous:
        result = weights.commit_round(rule=spec.rule, epoch=epoch, wave=wave)
        if result.status == "accepted":
            store.log("round-merged", epoch=epoch, wave=wave, version=result.version)
    following = next_wave(spec, epoch, wave)
    if following is None:
        finish_job(store, weights, spec)
        return
    if following[1] == 0:
        store.set_fields(epoch=following[0])
    release_wave(app, spec, *following)
    store.mark_released(epoch, wave)


def finish_job(store: JobStore, weights: WeightStore, spec: JobSpec) -> None:
    """Evaluate the final global weights on the test split and mark the job done."""
    pulled = weights.pull()
    model = models.build_model(spec.model, spec.input_shape, spec.num_classes)
    training.load_numpy_state(model, pulled.weights)
    loss, accuracy = training.evaluate(model, store.array("x_test"), store.array("y_test"))
    store.add_eval(pulled.version, loss, accuracy)
    store.finish("done", test_accuracy=accuracy, test_loss=loss, version=pulled.version)
    store.log("finished", version=pulled.version, test_accuracy=accuracy, at=time.time())
    store.drop_staged_data()
    store.drop_bookkeeping()
