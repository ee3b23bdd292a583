"""`bpt train`: check a job, then run it on a private local cluster or submit it to Redis."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal

import click

from bpt.model import catalog
from bpt.data import datasets
from bpt.train import merge
from bpt.train import noise_scale
from bpt.errors import BptError, ConfigError
from bpt.broker.connection import connect
from bpt.broker.redis_server import PrivateRedis

from .options import broker_url_option, tls_options, weights_url_option


def load_config(ctx, param, path):
    """Eager: read a TOML file whose keys are train's option names, as defaults for the flags."""
    if path is None:
        return None
    import tomllib

    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
    known = {p.name for p in ctx.command.params if p.name not in ("config",)}
    values = {k.replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"config file {path}: unknown key(s) {', '.join(unknown)}; "
                          "keys are train's option names, e.g. epochs, batch_size")
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return path


@click.command()
@click.option("--config", type=click.Path(dir_okay=False), callback=load_config, is_eager=True, expose_value=False,
              help="A TOML file of option values (keys as the option names); flags on the command line win.")
@click.option("--dataset", "-d", default="digits", show_default=True,
              help=f"{', '.join(datasets.BUILTIN)}; an .npz with arrays x (N,H,W, N,C,H,W or N,H,W,C) and y; "
                   "an image folder (one subfolder per class, PNG/JPEG); or an array directory (x.npy, y.npy) "
                   "on a path every worker reads, for data too large to stage in Redis. See docs/data.md.")
@click.option("--val", "val_path", default=None, help="Image folder: a validation folder with the same classes.")
@click.option("--test", "test_path", default=None,
              help="A test split of your own: an image folder (with an image-folder data set) or an .npz.")
@click.option("--model", "-m", default=None,
              help=f"A built-in model ({', '.join(sorted(catalog.BUILTIN_MODELS))}); a model file describing your "
                   "network (.toml, .json or .yaml, see examples/models/); or an installed plug-in model "
                   "DIST:ENTRY (entry-point group bpt.models). Default: the built-in one for the image size.")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True,
              help="Each worker's local optimizer; its state stays on the worker, only weights travel.")
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option("--lr-schedule", type=click.Choice(["constant", "cosine", "step"]), default=None,
              help="Learning-rate schedule over the job's global progress, not per task (default: the model's: "
                   "cosine for lenet5, constant for the others).")
@click.option("--warmup-epochs", type=float, default=0.0, show_default=True,
              help="Linear warm-up of the learning rate over this many epochs.")
@click.option("--step-every", type=int, default=0,
              help="step schedule: epochs between two x0.1 steps (default: a third of the epochs).")
@click.option("--label-smoothing", type=float, default=0.0, show_default=True)
@click.option("--augment", type=click.Choice(["crop", "flip"]), multiple=True,
              help="Training-only augmentation, repeatable: random crop after padding an eighth of the side, "
                   "horizontal flip.")
@click.option("--target-accuracy", type=float, default=0.0,
              help="Finish once the global model reaches this validation accuracy (0..1); the job ends done "
                   "with the reason.")
@click.option("--top-k", type=int, default=0, help="Also report top-k test accuracy (k >= 2).")
@click.option("--patience", type=click.IntRange(min=0), default=0,
              help="Early stopping: finish once this many evaluations in a row (one an epoch by default) have "
                   "not bettered the best validation accuracy. The best-validation version, best.safetensors, "
                   "is written beside model.safetensors whenever the job was evaluated "
                   "on validation during training (with or without --patience). 0: off.")
@click.option("--init-from", "init_from", default=None, metavar="MODEL.safetensors",
              help="Start from these weights (a model bpt wrote, e.g. an earlier job's model.safetensors): "
                   "fine-tuning. Its layout must be the model's.")
@click.option("--resume", "resume_from", default=None, metavar="JOB|DIR|CHECKPOINT",
              help="Continue a job from where it stopped, at its version, epoch and lr schedule: a failed or "
                   "cancelled JOB on --redis-url, or a checkpoint (DIR/checkpoint.safetensors, written while a "
                   "job is followed and on Ctrl-C). The job keeps its id and its own settings: options that "
                   "define a job are not read; its data is loaded again from where it was.")
@click.option("--checkpoint-every", type=click.FloatRange(min=0), default=5.0, show_default=True, metavar="MINUTES",
              help="While the job is followed, write OUT/checkpoint.safetensors this often (and on Ctrl-C); 0: "
                   "only on Ctrl-C.")
@click.option("--epochs", "-e", type=int, default=None, help="Passes over the training data (default: 20 for digits, else 5).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=None,
              help="Each worker's local learning rate (SGD or AdamW), the base of --lr-schedule (default: the "
                   "model's: 0.02 for lenet5, 0.05 for the others).")
@click.option("--lr-scaling", type=click.Choice(["sqrt", "none"]), default=None,
              help="sqrt: multiply each worker's lr by sqrt(K), at most x4, under the rules that merge K deltas "
                   "as one step (normalized, sync), as the square-root scaling rule does for a K times larger "
                   "batch (default: the model's: sqrt for lenet5, none for the others).")
@click.option("--momentum", type=float, default=0.9, show_default=True)
@click.option("--subset-size", type=int, default=None, help="Samples per subset task (default: n/16 within 128..2048).")
@click.option("--rule", type=click.Choice(merge.RULES), default=merge.DEFAULT_RULE, show_default=True,
              help="Global update: normalized (AGWU's accuracy weight, each push divided by the live "
                   "workers; holds accuracy as workers grow), agwu (the paper's gamma^staleness), plain "
                   "async, adascale (normalized times AdaScale's gain ratio from the workers' gradient "
                   "statistics; slower than normalized or diverging on Fashion-MNIST), or synchronous "
                   "rounds. See docs/scaling.md.")
@click.option("--alpha", type=float, default=None,
              help="Contribution scale (default: 1 - gamma for agwu, 1 for the others).")
@click.option("--gamma", type=float, default=0.5, show_default=True, help="AGWU staleness decay, in (0, 1].")
@click.option("--s-max", type=int, default=None,
              help="Reject pushes staler than this (default: 2 x the live training processes, read at each push).")
@click.option("--guardrail", type=float, default=0.05, show_default=True,
              help="When validation accuracy is this much below its best at three checks in a row "
                   "(4 to 8 an epoch), halve alpha and s-max (0: off).")
@click.option("--partition", type=click.Choice(["greedy", "idpa", "static"]), default="greedy", show_default=True,
              help="How subsets reach workers: a shared queue, IDPA increments sized by measured throughput "
                   "(the scheduler task), or a static equal split.")
@click.option("--eval-every", type=int, default=0, help="Evaluate the test split every N versions (default: once an epoch; with --rule sync a version is a round).")
@click.option("--samples", type=int, default=None, help="digits-aug / synthetic: training samples to generate.")
@click.option("--image-size", type=int, default=None,
              help="synthetic: image side length (default 28); image folder: resize and centre-crop to this (default 32).")
@click.option("--channels", type=int, default=1, show_default=True, help="synthetic: image channels.")
@click.option("--classes", type=int, default=10, show_default=True, help="synthetic: classes.")
@click.option("--class-names", default=None, metavar="A,B,...",
              help="The classes' names in label order, for data without them (.npz, arrays): kept in the model "
                   "file, so that `bpt predict` writes names and scores labelled folders by name.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", "-w", type=int, default=None,
              help="Local training processes (embedded: one worker with this many; default one per core). With --redis-url the job "
                   "counts the live workers' training processes itself.")
@click.option("--threads", type=int, default=None, help="Threads per local worker for the inner layer (default 1).")
@click.option("--device", default=None,
              help="Embedded run: the local workers' device, auto (CUDA when there is one), cpu, cuda or cuda:N. "
                   "Against a cluster each worker's own --device decides.")
@click.option("--inner", type=click.Choice(["auto", "torch", "tasks"]), default="auto", show_default=True,
              help="Inner-layer strategy: PyTorch's intra-op threads, or bpt's micro-batch tasks (a worker's --inner wins).")
@click.option("--redis-url", envvar="BPT_REDIS_URL", default=None,
              help="Use this Redis and its workers (or BPT_REDIS_URL). Without it, bpt starts a private "
                   "Redis server and local workers, and stops them after.")
@broker_url_option
@weights_url_option
@tls_options
@click.option("--detach", is_flag=True, help="Print the job id and return (needs --redis-url).")
@click.option("--out", "out_dir", default=None, help="Where to write model.safetensors, metrics.json and metrics.csv (default ./bpt-runs/JOB).")
@click.option("--tensorboard", "tensorboard_dir", default=None,
              help="Also write TensorBoard event files of the evaluations to DIR/JOB as they happen (needs the "
                   "tensorboard package); with --detach, `bpt wait JOB --tensorboard DIR` writes them.")
@click.option("--json", "as_json", is_flag=True, help="Print the final metrics as one JSON line.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_obj
def train(settings, dataset, val_path, test_path, model, optimizer, weight_decay, lr_schedule, warmup_epochs,
          step_every, label_smoothing, augment, target_accuracy, top_k, patience, init_from, resume_from, checkpoint_every, epochs, batch_size, lr, lr_scaling, momentum, subset_size, rule, alpha, gamma, s_max,
          guardrail, partition, eval_every, samples, image_size, channels, classes, class_names, seed, workers, threads, device, inner, redis_url, broker_url, weights_url, redis_ca, redis_cert, redis_key, detach,
          out_dir, tensorboard_dir, as_json, quiet):
    """Train a model on a data set across Celery workers, merging their pushes asynchronously.

    With no Redis URL this runs everything here: a private redis-server on a free loopback
    port and one local worker with a training process per core, all stopped when it ends
    (also on Ctrl-C).
    """
    workers_given = workers is not None
    settings = settings.override(redis_url=redis_url, broker_url=broker_url, weights_url=weights_url, redis_ca=redis_ca,
                                 redis_cert=redis_cert, redis_key=redis_key, workers=workers, threads=threads,
                                 device=device)  # validates them
    if detach and settings.redis_url is None:
        raise ConfigError("--detach needs --redis-url: the embedded Redis server stops when bpt train returns")
    if detach and tensorboard_dir:
        raise ConfigError("--tensorboard is written by the process that follows the job: with --detach, run "
                          "`bpt wait JOB --tensorboard DIR`")
    for name, value in (("batch size", batch_size), ("samples", samples), ("image size", image_size),
                        ("channels", channels), ("classes", classes)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value}")
    resume_file = _resume_file(resume_from, settings) if resume_from else None
    interrupted = _catch_ctrl_c()
    with contextlib.ExitStack() as stack:
        alive = local = None
        if settings.redis_url is None:
            # Start the private Redis and the local workers first, so that their start-up (each
            # imports torch) overlaps this process's own import of torch and its checks of the
            # job; bad input stops them again before anything is submitted (the demo took 9.3 s
            # for a 2.0 s job with the start after the checks: benchmarks.startup).
            from bpt.workers.launcher import LocalWorkers

            server = stack.enter_context(PrivateRedis())
            settings = dataclasses.replace(settings, redis_url=server.url)
            local = LocalWorkers(settings, 1, concurrency=settings.workers)
            # Their Redis goes with them: nothing a worker still does once this run ends (a
            # warm shutdown of an idle Celery worker takes 1.2 s here, signing off into that
            # Redis) matters, on success, bad input or Ctrl-C alike.
            stack.callback(local.stop, ENDED_GRACE_SECONDS)
            local.spawn()
        from bpt.data.prepare import JobChoices, prepare

        from .follow import finish

        choices = JobChoices(
            dataset=datasets.DatasetSpec(dataset, samples, image_size, channels, classes, seed, val_path, test_path),
            model=model, epochs=epochs, subset_size=subset_size, batch_size=batch_size, lr=lr, lr_scaling=lr_scaling, momentum=momentum,
            rule=rule, alpha=alpha, gamma=gamma, s_max=s_max, eval_every=eval_every, seed=seed,
            workers=settings.workers, inner=inner, partition=partition, guardrail=guardrail,
            optimizer=optimizer, weight_decay=weight_decay, lr_schedule=lr_schedule, warmup_epochs=warmup_epochs,
            step_every=step_every, label_smoothing=label_smoothing, augment=tuple(augment),
            target_accuracy=target_accuracy, top_k=top_k, patience=patience, init_from=init_from,
            class_names=tuple(n.strip() for n in class_names.split(",")) if class_names else (),
        )
        if tensorboard_dir:
            from .follow import tensorboard_writer_class

            tensorboard_writer_class()
        if resume_from:
            from bpt.job.resume import partition_refusal

            spec, weights = _resume_spec(resume_from, resume_file, settings), None
            if partition_refusal(spec.partition, spec.job_id):
                raise ConfigError(partition_refusal(spec.partition, spec.job_id))
            from bpt.data.prepare import reload_data

            data = reload_data(spec)
        else:
            spec, data, weights = prepare(choices)  # every check on the job happens before anything is submitted
        if out_dir is None and resume_file is not None:  # where its checkpoint is: the model goes beside it
            out_dir = resume_from if os.path.isdir(resume_from) else os.path.dirname(os.path.abspath(resume_from))
        out_dir = out_dir or os.path.join(settings.out_dir, spec.job_id)
        if local is not None:
            from bpt.model.devices import resolve

            resolve(settings.device)  # the local workers' device exists here
            if not quiet:
                click.echo(f"started a private Redis server; waiting for a local worker with {settings.workers} "
                           "training processes ...", err=True)
            local.wait_ready(LOCAL_START_SECONDS)
            alive = lambda: local.alive() > 0 or _no_worker_left(local)  # noqa: E731
            if interrupted:  # a library swallowed the KeyboardInterrupt while the workers started
                raise KeyboardInterrupt
        from bpt.workers.app import make_app
        from bpt.workers.submit import submit

        client = connect(settings.redis_url, settings.connect_timeout, settings.socket_timeout)
        if alive is None and not workers_given and not resume_from:  # a cluster: size sync rounds by what is live
            from bpt.broker.worker_registry import live_processes

            live = live_processes(client, settings.heartbeat_timeout, floor=0)  # 0: workers not up yet
            spec = dataclasses.replace(spec, workers=live or settings.workers)
        app = make_app(settings)
        stack.callback(app.close)
        if local is not None and settings.weights_url:  # the private Redis goes: so must the job's shards
            stack.callback(_delete_shards, settings, spec.job_id, local)
        if resume_from:
            store = _resume(app, client, settings, spec, resume_file, data, quiet)
        else:
            store = submit(app, client, settings, spec, data, weights)
        board = None
        if tensorboard_dir and not detach:
            from .follow import LiveBoard

            board = LiveBoard(tensorboard_dir, spec.job_id)
        from .follow import Checkpointer

        checkpoints = None if detach else Checkpointer(store, out_dir, checkpoint_every * 60, settings)
        try:
            state = _after_submit(store, spec, settings, client, local, alive, detach, quiet, board, checkpoints)
        except KeyboardInterrupt:
            path = checkpoints.write() if checkpoints is not None else None
            saved = f"checkpoint of version {checkpoints.written_version} written to {path}" if path else \
                "no checkpoint written"
            if local is None:  # a cluster's job outlives this command: say what became of it
                click.echo(f"\ninterrupted; job {spec.job_id} was submitted and goes on on the cluster: "
                           f"`bpt wait {spec.job_id}` reattaches, `bpt cancel {spec.job_id}` stops it ({saved})",
                           err=True)
            else:
                click.echo(f"\ninterrupted; {saved}" + (f": `bpt train --resume {out_dir}` continues job "
                                                          f"{spec.job_id}" if path else ""), err=True)
            raise
        if state is None:
            return
        resume_with = None
        if local is not None and state.get("status") in ("failed", "cancelled"):  # its Redis goes: keep where it was
            resume_with = out_dir if checkpoints.write() else None
        if local is not None:
            local.request_stop()  # the job has ended: the workers shut down while the results are written
        finish(store, state, out_dir, as_json, board, settings, resume_with=resume_with)


def _no_worker_left(local) -> bool:
    """Every local worker has exited: a one-line error naming where their logs are kept."""
    local.failed = True
    raise BptError(f"every local worker has exited; see their logs in {local.log_dir}")


def _resume_file(source: str, settings):
    """The checkpoint to resume from when `source` is a file or a run directory (None: a job
    id on --redis-url); one-line error when it is neither."""
    from bpt.broker import checkpoint

    if os.path.exists(source):
        return checkpoint.read_file(source)
    if settings.redis_url is None:
        raise ConfigError(f"--resume {source!r}: no such checkpoint file or run directory (a job id needs --redis-url, "
                          "where the job is)")
    return None


def _resume_spec(source: str, resume_file, settings):
    if resume_file is not None:
        return resume_file.spec
    from bpt.broker.job_store import JobStore

    client = connect(settings.redis_url, settings.connect_timeout, settings.socket_timeout)
    store = JobStore(client, source)
    if not store.exists():
        raise ConfigError(f"--resume {source!r}: no such job on this Redis server, and no such checkpoint file")
    from bpt.job.resume import resume_refusal

    refusal = resume_refusal(store.status(), source)
    if refusal:
        raise ConfigError(refusal)
    return store.spec()


def _resume(app, client, settings, spec, resume_file, data, quiet: bool):
    """Put the job back (in place, or from the checkpoint on a server without it) and send
    what its released waves still lack."""
    from bpt.broker import checkpoint
    from bpt.broker.job_store import JobStore
    from bpt.workers import flow

    store = JobStore(client, spec.job_id)
    limit = settings.max_staged_mb * 2**20
    if store.exists():
        plan = checkpoint.restart(store, data, limit)
        source = "its last version on this server"
    else:
        shards = None
        if settings.weights_url:
            from bpt.broker.weight_shards import open_shards

            shards = open_shards(settings.weights_url, settings.connect_timeout, settings.socket_timeout,
                                 settings.weights_shards or None)
        try:
            plan = checkpoint.restore(client, resume_file, data, limit, shards)
        finally:
            if shards is not None:
                shards.close()
        source = "the checkpoint"
    version = store.client.hget(store.keys.weights, "version").decode()
    sent = flow.send_resumed(app, store, spec, plan)
    store.log("resumed", version=int(version), subsets_sent=sent, source=source)
    if not quiet:
        click.echo(f"resuming job {spec.job_id} from {source}: version {version}, epoch {plan.send[0][0] + 1 if plan.send else spec.epochs}"
                   f"/{spec.epochs}, {sent} subsets to send again", err=True)
    return store


def _after_submit(store, spec, settings, client, local, alive, detach: bool, quiet: bool, board=None,
                  checkpoints=None):
    """Warnings about the submitted job, then follow it (None with --detach)."""
    if local is None:  # a cluster: say so now if nobody there can take the job
        from .follow import cluster_view

        hint = cluster_view(client, json.loads(spec.to_json()), "queued", [], settings.heartbeat_timeout)
        if hint["queued_reason"]:
            click.echo(f"warning: job {spec.job_id} is queued: {hint['queued_reason']}", err=True)
            store.log("warning", reason=f"queued at submit: {hint['queued_reason']}")
    few = noise_scale.too_few_subsets(spec.n_subsets, spec.workers)
    if few:
        click.echo(f"warning: {few}", err=True)
        store.log("warning", reason=few)
    if detach:
        click.echo(spec.job_id)
        return None
    if not quiet:
        click.echo(f"job {spec.job_id}: {spec.model} on {spec.dataset}, {spec.epochs} epochs x "
                   f"{spec.n_subsets} subsets, rule {spec.rule.kind}", err=True)
    from .follow import follow

    return follow(store, settings.poll_seconds, show=not quiet, alive=alive, board=board, checkpoints=checkpoints)


def _delete_shards(settings, job_id: str, local) -> None:
    """After the local workers have stopped (none can upload after the scan), delete the
    job's shards on the weights cluster; a failure there is a warning, not the run's end."""
    from bpt.broker.weight_shards import open_shards

    local.stop(ENDED_GRACE_SECONDS)
    try:
        shards = open_shards(settings.weights_url, settings.connect_timeout, settings.socket_timeout)
        try:
            shards.delete_job(job_id)
        finally:
            shards.close()
    except Exception as e:
        click.echo(f"warning: could not delete job {job_id}'s weight shards: {e}", err=True)


LOCAL_START_SECONDS = 90.0
ENDED_GRACE_SECONDS = 0.3


def _catch_ctrl_c() -> list:
    """Make Ctrl-C raise KeyboardInterrupt and remember it, also where SIGINT was inherited as
    ignored (a background job) or a library swallows the exception; returns the record."""
    seen = []

    def on_sigint(signum, frame):
        seen.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    return seen
