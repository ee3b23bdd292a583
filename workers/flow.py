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

The decision is bpt.job.lifecycle.after_push (pure). Several tasks can reach a threshold at
once (and a sync round's completing task can be redelivered), so one claims each release
with SET NX; a crash between claim and send leaves the wave to the watchdog, which sends the
unfinished subsets of a stalled job again (a subset already applied in that epoch is a
counted duplicate). The job is finished by the one task that wins its `claim` move.
"""

from __future__ import annotations

import time
import uuid

from bpt.train import learning
from bpt.job import lifecycle, metrics
from bpt.model import registry as models
from bpt.train import training
from bpt.errors import ModelUnavailable
from bpt.job.jobspec import JobSpec
from bpt.broker import recovery
from bpt.broker.job_store import JobStore
from bpt.broker.keeper import Keeper
from bpt.broker.weight_store import PushResult, WeightStore

from .app import TRAIN_QUEUE, TRAIN_TASK


def release_wave(app, spec: JobSpec, epoch: int, wave: int) -> int:
    subsets = spec.waves(epoch)[wave]
    with app.producer_or_acquire() as producer:
        for subset in subsets:
            app.send_task(TRAIN_TASK, kwargs=task_kwargs(spec.job_id, epoch, wave, subset), queue=TRAIN_QUEUE,
                          producer=producer)
    return len(subsets)


def send_resumed(app, store: JobStore, spec: JobSpec, plan) -> int:
    """Send what a resumed job (bpt.job.resume.Plan) has left of its released waves; a job with
    nothing left gets a finish task. Returns the subsets sent."""
    from .app import CONTROL_QUEUE, FINISH_TASK

    if plan.send:
        store.set_fields(epoch=plan.send[0][0])
    elif plan.commit is not None:  # sync: merge the staged round, then release the next or finish
        store.mark_running()
        epoch, wave = plan.commit
        weights = WeightStore(store.client, spec.job_id, script_table={})
        after_subset(app, store, weights, spec, epoch, wave, len(spec.waves(epoch)[wave]))
        return 0
    elif plan.finished:
        store.mark_running()  # a finish task finishes only a job that accepts pushes
        app.send_task(FINISH_TASK, kwargs={"job_id": spec.job_id, "reason": "resumed with every wave trained"},
                      queue=CONTROL_QUEUE)
    sent = 0
    with app.producer_or_acquire() as producer:
        for epoch, wave, subsets in plan.send:
            for subset in subsets:
                app.send_task(TRAIN_TASK, kwargs=task_kwargs(spec.job_id, epoch, wave, subset), queue=TRAIN_QUEUE,
                              producer=producer)
                sent += 1
    return sent


def task_kwargs(job_id: str, epoch: int, wave: int, subset: int) -> dict:
    """Named arguments, so that Flower shows what each task trains and can filter by job."""
    return {"job_id": job_id, "epoch": epoch, "wave": wave, "subset": subset}


def shape(spec: JobSpec) -> lifecycle.Shape:
    """The waves of every epoch: what bpt.job.lifecycle plans on."""
    return lifecycle.Shape(spec)


def next_wave(spec: JobSpec, epoch: int, wave: int) -> tuple[int, int] | None:
    return lifecycle.next_wave(shape(spec), epoch, wave)


def after_subset(app, store: JobStore, weights: WeightStore, spec: JobSpec, epoch: int, wave: int,
                 done: int, live: int | None = None) -> PushResult | None:
    """Called after each subset's push (done: the wave's finished subsets; live: the training
    processes in the cluster now, spec.workers if unknown); moves the job on.

    What to do is bpt.job.lifecycle.after_push, a pure function of a snapshot of the waves' done
    counts; each action it returns is claimed atomically here (a release with SET NX, the
    job's end with the `claim` move), so tasks acting on the same snapshot at once do it once.
    A redelivered copy of a sync round's completing task (its process died) commits again
    (idempotent) and finds the release claimed; a crash between a claim and its send leaves
    the wave to the watchdog. Returns the commit when this call committed a sync round (its
    caller may evaluate the round's version: bpt.job.task.after_commit), else None."""
    live = spec.workers if live is None else live
    committed = None
    waves = shape(spec)
    counts = {(epoch, wave): done}
    for at in lifecycle.waves_to_read(waves, epoch, wave):
        counts[at] = store.done_count(*at)
    for action in lifecycle.after_push(waves, spec.rule.synchronous, store.status(), epoch, wave, counts, live):
        if isinstance(action, lifecycle.CommitRound):
            result = weights.commit_round(rule=spec.rule, epoch=action.epoch, wave=action.wave)
            if result.status == "accepted":
                store.log("round-merged", epoch=action.epoch, wave=action.wave, version=result.version)
                committed = result
        elif isinstance(action, lifecycle.Release):
            release_after(app, store, spec, action.epoch, action.wave)
        elif isinstance(action, lifecycle.Finish):
            finish_job(store, weights, spec)
    return committed


def all_waves_done(store: JobStore, spec: JobSpec) -> bool:
    """Every wave of a greedy job finished (sync: every round committed)."""
    epoch = int(store.state().get("epoch", 0))
    return spec.partition == "greedy" and recovery.open_wave(store.client, spec, epoch)[0] is None


def release_after(app, store: JobStore, spec: JobSpec, epoch: int, wave: int) -> bool:
    """Send the wave after (epoch, wave), if this caller wins its release (SET NX)."""
    if not store.claim_release(epoch, wave):
        return False
    following = lifecycle.next_wave(shape(spec), epoch, wave)
    if following[1] == 0:
        store.set_fields(epoch=following[0])
    release_wave(app, spec, *following)
    return True


FINISH_RENEWALS_S = 600.0  # a finisher renews its claim this long at most: one hung longer is taken over


def finish_job(store: JobStore, weights: WeightStore, spec: JobSpec, takeover: str | None = None,
               reason: str = "") -> bool:
    """Evaluate the final global weights on the test split and mark the job done, if this
    caller wins the job's `claim` (exactly one does; another may take over only once the
    claim is FINISH_PATIENCE old: `takeover` says why, for the log). Returns whether this
    caller finished it. An evaluation that raises fails the job with the reason: else every
    takeover would claim, raise and leave it `finishing` forever. A machine that cannot build
    the job's model or read its data (ModelUnavailable: a takeover landed on a worker without
    the plug-in) does not claim: another finishes it."""
    from .runtime import data_source

    if store.status() in lifecycle.ENDED:
        return False
    try:
        model, source = models.build_for(spec), data_source(store, spec)
    except ModelUnavailable as e:
        store.log("finish-declined", reason=str(e)[:300])
        return False
    token = uuid.uuid4().hex
    if not store.claim_finish(token, reason):
        return False
    if takeover:
        store.log("finish-taken-over", reason=takeover)
    # Whoever wins a claim a dead finisher left (the reconciler's finish task, the scheduler's
    # round) ends the job for that finisher's reason: a target or patience stop stays one.
    reason = reason or str(store.state().get("finish_reason", ""))
    patience = lifecycle.TAKEOVER["claim"]
    with Keeper(lambda: store.renew_claim(token), patience / 4, at_most=FINISH_RENEWALS_S):
        return _evaluate_and_complete(store, weights, spec, model, source, reason)


def _evaluate_and_complete(store, weights, spec, model, source, reason: str) -> bool:
    try:
        pulled = weights.pull()
        training.load_numpy_state(model, pulled.weights)
        scores = training.score(model, *source.split("test"), top_k=spec.top_k)
        loss, accuracy = scores["loss"], scores["accuracy"]
        x_val, y_val = source.split("val")  # the still-learning verdict's last score (under sync, its only one of the last round)
        val = {"val_accuracy": training.score(model, x_val, y_val)["accuracy"]} if len(y_val) else {}
    except Exception as e:
        if store.fail(f"final evaluation: {type(e).__name__}: {e}"):
            store.log("failed", error=f"final evaluation: {e}"[:500])
        raise
    extra = {k: v for k, v in scores.items() if k == "top_k_accuracy"}
    store.add_eval(pulled.version, loss, accuracy, final=True, samples=store.samples_trained(), **extra, **val)
    warning = learning.verdict(accuracy, store.evals(), spec.num_classes, all_epochs=not reason,
                               workers=metrics.training_processes(spec.workers, store.worker_stats()))
    if warning:
        store.log("warning", version=pulled.version, test_accuracy=accuracy, reason=warning)
    try:  # sharded: every version but the final one goes now (pushes are refused while finishing)
        weights.sweep_shards()
    except Exception as e:  # what is left goes when the job is deleted
        store.log("warning", reason=f"weight shard clean-up failed: {e}"[:300])
    if not store.complete(test_accuracy=accuracy, test_loss=loss, version=pulled.version,
                          reason=reason or f"all {spec.epochs} epochs trained", **extra,
                          **({"warning": warning} if warning else {})):
        return False  # cancelled, or failed, while it was being evaluated: that stands
    store.log("finished", version=pulled.version, test_accuracy=accuracy, at=time.time(),
              reason=reason or f"all {spec.epochs} epochs trained")
    store.drop_staged_data()
    store.drop_bookkeeping()
    return True
