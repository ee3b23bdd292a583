"""Training one subnetwork on one piece of an epoch: pull, train locally, push, move on.

A piece is either a subset of a wave (greedy partition: the task that completes a wave
releases the next) or an index range handed out by the scheduler task (idpa, static)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time

from bpt.train import guardrail
from bpt.job import lifecycle, task
from bpt.train import merge, noise_scale
from bpt.train import training
from bpt.errors import InvalidTask
from bpt.broker import clock, worker_registry
from bpt.broker.job_store import JobStore
from bpt.broker.weight_store import WeightStore

from . import flow, scheduler
from .runtime import WorkerRuntime


class JobPaused(Exception):
    """Raised before any work when the job is paused: the task is retried later."""


def train_subset(app, runtime: WorkerRuntime, worker: str, job_id: str, epoch: int, wave: int,
                 subset: int, delivery: str = "") -> dict:
    store, cache = _open(runtime, worker, job_id, epoch, subset, delivery)
    if cache is None:
        return {"skipped": store.status()}
    with _counted(store, epoch, subset, delivery):
        spec = cache.spec
        if spec.partition != "greedy" or not (0 <= epoch < spec.epochs and 0 <= wave < len(spec.waves(epoch))
                                              and subset in spec.waves(epoch)[wave]):
            raise InvalidTask(f"subset {subset} of wave {wave}, epoch {epoch} is not part of job {job_id}")
        start, end = spec.subsets[subset]
        return _train(app, runtime, worker, store, cache, epoch, wave, subset, start, end, release=True)


def train_range(app, runtime: WorkerRuntime, worker: str, job_id: str, epoch: int, start: int, end: int,
                delivery: str = "") -> dict:
    piece = f"{start}:{end}"
    store, cache = _open(runtime, worker, job_id, epoch, piece, delivery)
    if cache is None:
        return {"skipped": store.status()}
    with _counted(store, epoch, piece, delivery):
        spec = cache.spec
        if spec.partition == "greedy" or not (0 <= epoch < spec.epochs and 0 <= start < end <= spec.n_train):
            raise InvalidTask(f"range {start}:{end} of epoch {epoch} is not part of job {job_id}")
        return _train(app, runtime, worker, store, cache, epoch, 0, piece, start, end, release=False)


def _open(runtime: WorkerRuntime, worker: str, job_id: str, epoch: int, piece, delivery: str):
    """The job's store and this process's cache of it, or (store, None) if the task has
    nothing to do; JobPaused if it must wait. Counts the delivery first (before loading the
    job: a task whose process dies while loading it is a poison task too), and fails the job
    once a piece has had more than max_deliveries that did not end cleanly."""
    store = JobStore(runtime.client, job_id)
    action = lifecycle.on_task_start(store.status())
    if action == "skip":
        return store, None
    if action == "wait":
        raise JobPaused(job_id)
    if delivery:
        deliveries = _deliveries_that_died(runtime, store.count_delivery(epoch, piece, delivery, worker, os.getpid()),
                                           delivery)
        if deliveries > runtime.settings.max_deliveries:  # the ones before all died with it
            kind = "range" if isinstance(piece, str) else "subset"
            reason = f"{kind} {piece} of epoch {epoch} killed its worker {deliveries - 1} times"
            if store.fail(reason):
                store.log("failed", worker=worker, error=reason)
            store.forget_deliveries(epoch, piece)
            return store, None
    with _counted(store, epoch, piece, delivery):
        return store, runtime.job(store)


RUNNER_WAIT_S = 3.0  # a redelivery waits at most this long for a fresh beat of an earlier delivery's worker


def _deliveries_that_died(runtime: WorkerRuntime, deliveries: dict[str, dict], mine: str) -> int:
    """This delivery plus the earlier ones that died: an earlier one still running (a slow
    task the Redis broker gave out again after its visibility timeout) is not a poison task
    (issue 26, finding 8). Whether it runs: its worker is alive and still has its process."""
    others = {t: d for t, d in deliveries.items() if t != mine}
    if not others:
        return 1
    arrived = deliveries[mine]["arrived"]
    deadline = time.monotonic() + RUNNER_WAIT_S
    while True:
        registry, now = worker_registry.workers(runtime.client), clock.now(runtime.client)
        verdicts = [worker_registry.delivery_alive(d["pid"], registry.get(d["worker"]), arrived, now,
                                                   runtime.settings.heartbeat_timeout) for d in others.values()]
        if None not in verdicts or time.monotonic() > deadline:
            return 1 + sum(1 for v in verdicts if not v)
        time.sleep(0.2)


@contextlib.contextmanager
def _counted(store: JobStore, epoch: int, piece, delivery: str):
    """A delivery that ends by raising (an error, a refused message, an outage given up on,
    a shutdown) did not kill its process: take its token back, so that only deliveries that
    died stay counted."""
    try:
        yield
    except BaseException:
        if delivery:
            store.give_back_delivery(epoch, piece, delivery)
        raise


LOST_RETRIES = 3  # trainings of one subset whose pulled version the store lost (a rollback)


def _train(app, runtime, worker, store, cache, epoch, wave, piece, start, end, release: bool,
           lost: int = 0) -> dict:
    """Pull, train, push, decide (bpt.job.task.after_push), apply: one task, top to bottom."""
    entered = time.perf_counter()
    spec = cache.spec
    weights = WeightStore(runtime.client, store.job_id, runtime.scripts, shards=runtime.shards)
    # not the workers that declined this job's model: they train none of it (issue 26, finding 6)
    live = worker_registry.live_processes(runtime.client, runtime.settings.heartbeat_timeout, exclude=store.lacking())
    if weights.is_applied(epoch, piece):  # a redelivery after our push landed: counted, then only move on
        store.forget_deliveries(epoch, piece)
        store.count_duplicate()
        if release:  # a sync round's completing task that died before its commit commits it here
            committed = flow.after_subset(app, store, weights, spec, epoch, wave, store.done_count(epoch, wave), live)
            if committed is not None:
                _after_commit(store, weights, spec, cache, committed, epoch, wave, None)
        return {"duplicate": True}
    store.mark_running()
    if not release:
        _ask_for_work(app, runtime, store)  # queue our next range while this one trains

    trained = _pull_and_train(runtime, store, weights, cache, epoch, wave, start, end, live)
    pushing = time.perf_counter()
    result = _push(store, weights, spec, trained, epoch, wave, piece, live)
    trained.push_seconds = time.perf_counter() - pushing
    if result.status == "closed":  # cancelled, failed or finished while this trained: nothing merged
        store.forget_deliveries(epoch, piece)
        store.log("push-closed", worker=worker, epoch=epoch, piece=piece, status=store.status())
        return {"status": "closed", "version": result.version}
    if result.status == "lost" and lost < LOST_RETRIES:
        store.log("push-lost", worker=worker, epoch=epoch, piece=piece, pulled=trained.pulled.version,
                  version=result.version, reason="the store lost the pulled version (rollback); training again")
        return _train(app, runtime, worker, store, cache, epoch, wave, piece, start, end, release, lost + 1)
    _record(runtime, worker, store, cache, trained, result, epoch, piece, live, entered)
    outcome = {"status": result.status, "version": result.version, "staleness": result.staleness,
               "loss": trained.loss, "accuracy": trained.accuracy}
    for action in task.after_push(result.version, result.weights is not None, spec.eval_interval,
                                  result.weights is not None and spec.guard_due(result.version), bool(spec.guardrail),
                                  spec.rule.synchronous, release):
        if isinstance(action, task.Evaluate):
            _evaluate(store, weights, spec, cache, result.version, result.weights, epoch, trained.loss)
            if store.status() not in lifecycle.OPEN:  # the target was reached: the job is done
                return outcome
        elif isinstance(action, task.Guard):
            _watch_accuracy(store, spec, cache, result.version, result.weights, live)
        elif action.greedy:
            committed = flow.after_subset(app, store, weights, spec, epoch, wave, result.done, live)
            if committed is not None:  # this task completed a sync round: its version may be due
                _after_commit(store, weights, spec, cache, committed, epoch, wave, trained.loss)
        else:
            _ask_for_work(app, runtime, store)  # sees our range done: the next epoch, or the job's end
    return outcome


def _after_commit(store, weights, spec, cache, committed, epoch: int, wave: int, train_loss: float | None) -> None:
    """Evaluate a committed sync round's version when bpt.job.task.after_commit says it is due
    (the next round is already released: the other workers train meanwhile). A job that
    finished at this round is evaluated by its finish instead. train_loss: the committing
    task's own (one of the round's K), None for a redelivered copy that trained nothing."""
    for action in task.after_commit(committed.version, spec.eval_every, wave, len(spec.waves(epoch))):
        if store.status() in lifecycle.OPEN:
            _evaluate(store, weights, spec, cache, action.version, committed.weights, epoch, train_loss)


@dataclasses.dataclass
class Trained:
    pulled: object  # the Pulled version trained from
    delta: dict  # W_local - W_pulled
    loss: float  # mean training loss of the pass
    accuracy: float  # the local model's score on its validation slice (AGWU's weight)
    meter: object  # gradient statistics (bpt.train.noise_scale)
    began: float  # perf_counter at the start of training
    compute: float  # seconds of training
    score_seconds: float
    samples: int  # the piece's size
    start: int = 0  # the piece's first row (the job's progress under idpa and static partitions)
    push_seconds: float = 0.0  # the push's, lease and merge included (benchmarks.task_costs)


def _pull_and_train(runtime, store, weights, cache, epoch, wave, start, end, live) -> Trained:
    spec = cache.spec
    x, y = cache.rows(store, start, end)
    pulled = weights.pull()
    training.load_numpy_state(cache.model, pulled.weights)
    began = time.perf_counter()
    cache.stepper.set_lr(spec.lr_at(epoch, pulled.version, wave, start, live))  # the schedule at the job's progress, x sqrt(K)
    meter = training.GradientMeter(spec.train.batch_size)
    loss = training.train_pass(cache.stepper, x, y, spec.train.batch_size, seed=spec.seed + 7919 * epoch + start,
                               augment=spec.train.augment, meter=meter)
    compute = time.perf_counter() - began
    if runtime.slowdown > 1:  # emulate a slower node: wait (F - 1) x the measured compute time
        time.sleep((runtime.slowdown - 1) * compute)
    scoring = time.perf_counter()
    _, accuracy = training.evaluate(cache.model, cache.x_score, cache.y_score)
    scored = time.perf_counter()
    delta = merge.subtract(training.state_to_numpy(cache.model), pulled.weights)
    return Trained(pulled, delta, loss, accuracy, meter, began, compute, scored - scoring, end - start, start)


def _push(store, weights, spec, trained: Trained, epoch, wave, piece, live):
    if spec.rule.synchronous:
        return weights.stage(delta=trained.delta, samples=trained.samples, accuracy=trained.accuracy, epoch=epoch,
                             wave=wave, subset=piece)
    rule = guardrail.rule_in_force(spec.rule, store.guard_level() if spec.guardrail else 0, live)
    return weights.push(rule=rule, pulled_version=trained.pulled.version, delta=trained.delta,
                        accuracy=trained.accuracy, epoch=epoch, wave=wave, subset=piece, base=trained.pulled, live=live,
                        stats=trained.meter.result(), progress=spec.progress(epoch, trained.pulled.version, wave, trained.start))


def _record(runtime, worker, store, cache, trained: Trained, result, epoch, piece, live, entered) -> None:
    """The task's work, throughput and push in the job's statistics and events."""
    seconds = time.perf_counter() - trained.began
    samples = trained.samples
    store.forget_deliveries(epoch, piece)
    stats = trained.meter.result()
    if noise_scale.usable(stats) and result.status == "accepted":  # for the job's gradient noise scale
        store.add_gradient_stats(stats, epoch)
    store.record_work(worker, samples, seconds, f"{cache.inner}/{runtime.settings.threads}", str(cache.device),
                      result.staleness if result.status == "accepted" else None)
    worker_registry.record_task(runtime.client, worker, samples, seconds, store.keys.rates, runtime.scripts["rate"])
    store.log(f"push-{result.status}", worker=worker, epoch=epoch, piece=piece, staleness=result.staleness,
              version=result.version, scale=round(result.scale, 6), accuracy=round(trained.accuracy, 4), live=live,
              compute_s=round(trained.compute, 5), score_s=round(trained.score_seconds, 5),
              push_s=round(trained.push_seconds, 5),
              setup_s=round(trained.began - entered, 5), task_s=round(time.perf_counter() - entered, 5))


def _evaluate(store, weights, spec, cache, version: int, pulled, epoch: int, train_loss: float | None) -> None:
    """Score a version of the global weights on the test split and on the validation split
    (a row of metrics.csv, with the guardrail's level in force): a job with a target accuracy
    that reaches it on validation finishes now. Validation, not test: stopping on the test
    score would bias it. A job that ended while this scored (its finish evaluated the final
    version) records nothing: a row after the final one would read as the job's last."""
    training.load_numpy_state(cache.eval_model, pulled)
    scores = training.score(cache.eval_model, *cache.test_data(store), top_k=spec.top_k)
    extra = {"epoch": epoch, "samples": store.samples_trained(),
             **({"train_loss": train_loss} if train_loss is not None else {})}
    if "top_k_accuracy" in scores:
        extra["top_k_accuracy"] = scores["top_k_accuracy"]
    extra["val_accuracy"] = training.score(cache.eval_model, *cache.val_data(store))["accuracy"]
    if store.status() not in lifecycle.OPEN:
        return
    if spec.guardrail and not spec.rule.synchronous:
        extra["guard_level"] = store.guard_level()
    store.add_eval(version, scores["loss"], scores["accuracy"], **extra)
    store.log("evaluated", version=version, test_loss=scores["loss"], test_accuracy=scores["accuracy"],
              **{k: v for k, v in extra.items() if k not in ("epoch", "samples")})
    _, since_best = store.observe_validation(extra["val_accuracy"], version, pulled,  # best.safetensors
                                             keep=weights.shards is None)
    if spec.target_accuracy and extra["val_accuracy"] >= spec.target_accuracy:
        reason = (f"validation accuracy {extra['val_accuracy']:.4f} reached the target {spec.target_accuracy:g} "
                  f"at version {version}")
        flow.finish_job(store, weights, spec, reason=reason)
    elif spec.patience and since_best >= spec.patience:
        state = store.state()
        reason = (f"validation accuracy did not improve for {since_best} evaluations (--patience {spec.patience}): "
                  f"best {state.get('best_val', 0):.4f} at version {state.get('best_version')}")
        flow.finish_job(store, weights, spec, reason=reason)


def _watch_accuracy(store, spec, cache, version: int, weights, live: int) -> None:
    """The guardrail: score the new global weights on the guard's validation slice (the tasks
    score on its first part); halve alpha when accuracy fell by more than noise explains, give
    a halving back when it recovered (bpt.train.guardrail). Every check is a `guard-check` event; a
    change of level is a `guardrail` event."""
    training.load_numpy_state(cache.eval_model, weights)
    _, val_accuracy = training.evaluate(cache.eval_model, cache.x_guard, cache.y_guard)
    samples = len(cache.y_guard)
    state, event = store.observe_accuracy(val_accuracy, spec.guardrail, samples)
    store.log("guard-check", version=version, val_accuracy=round(val_accuracy, 4), samples=samples,
              level=state.level, best=state.best, peak=state.peak,
              bound=round(guardrail.fall_bound(state.best, samples, spec.guardrail), 4))
    if event:
        rule = guardrail.rule_in_force(spec.rule, state.level, live)
        why = (f"validation accuracy fell more than noise on {samples} images explains (and more than "
               f"{spec.guardrail:g}) below its best at {guardrail.CONFIRM} checks in a row" if event == "tightened" else
               f"validation accuracy is back near its peak at {guardrail.CONFIRM} checks in a row")
        store.log("guardrail", version=version, action=event, level=state.level, val_accuracy=round(val_accuracy, 4),
                  alpha=rule.alpha, s_max=rule.s_max, reason=why)


def _ask_for_work(app, runtime, store) -> None:
    """Run a scheduling round here and now instead of waiting for the periodic one: a worker
    whose queue ran dry would otherwise idle until the next tick. Rounds are cheap (a few
    Redis calls) and race-safe (scheduler.schedule_round)."""
    scheduler.schedule_round(app, runtime.client, store.job_id, runtime.settings.heartbeat_timeout, runtime.shards)
