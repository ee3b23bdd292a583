"""The `bpt` command group: settings from BPT_* variables, errors as one line and an exit code.

Exit codes: 0 ok, 1 other bpt error, 2 bad flag or setting, 3 bad data, 4 Redis unreachable
or refused, 5 unknown job, 6 job failed or was cancelled, 7 corrupt blob, 8 job finished no better
than chance (outputs written), 9 this machine cannot build the model (a plug-in missing or of
another version), 130 interrupted.
"""

from __future__ import annotations

import importlib
import sys

import click

from bpt import __version__
from bpt.errors import BptError
from bpt.settings import Settings


# Subcommands are imported when one runs, not for `bpt --help`: their modules import torch,
# celery and numpy (about 1.2 s), which a help text or a typo must not wait for. The short
# help shown in `bpt --help` is kept here; a test checks it against each command's own.
COMMANDS = {
    "train": ("train", "train", "Train a model on a data set across Celery workers, merging their pushes asynchronously."),
    "worker": ("worker", "worker", "Start a worker that trains subsets for any job on this Redis server."),
    "flower": ("flower", "flower", "Start Flower to watch workers and tasks in a browser (tasks are named bpt.*, first "
                                   "argument the job id)."),
    "jobs": ("jobs", "jobs", "List the jobs on a Redis server."),
    "status": ("jobs", "status", "Show a job's state and metrics so far: epoch, version, accuracy, and per worker "
                                 "its throughput and the mean staleness of its accepted pushes."),
    "wait": ("jobs", "wait", "Follow a job with a progress bar until it ends, then write its model and metrics."),
    "cancel": ("jobs", "cancel", "Cancel a job: workers skip its remaining subsets; staged data is freed."),
    "pause": ("control", "pause", "Pause a job: running subsets finish and are merged, the rest wait; nothing is lost."),
    "resume": ("control", "resume", "Resume a paused job."),
    "logs": ("control", "logs", "Show a job's events: submissions, pushes accepted, rejected or invalid, rounds merged, "
                                "evaluations, pauses, failures."),
    "report": ("report", "report", "Plot test accuracy and loss against samples trained and version (rule events "
                                   "marked), per-worker throughput, and a summary."),
    "export": ("export", "export", "Write a job's current global weights, with the model name and input shape in the "
               "metadata; or turn a model file bpt wrote (model.safetensors, best.safetensors) into ONNX."),
    "predict": ("export", "predict", "Classify images with a model written by bpt train, wait or export: arrays "
                "in an .npz or .npy file, an image folder, a flat folder, one image or a glob."),
    "gc": ("jobs", "gc", "Free Redis memory that ended jobs left behind (staged data, wave bookkeeping, orphan keys)."),
    "workers": ("jobs", "workers", "List the workers that have trained or beaten their heartbeat on this Redis server."),
    "exporter": ("exporter", "exporter", "Serve Prometheus metrics (versions, pushes by outcome, staleness, worker "
                                         "throughput, queue depth)."),
    "simulate": ("simulate", "simulate", "Simulate one epoch and print each policy's makespan against the ideal bound."),
}


class BptGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(f"{__package__}.{module}"), attr)

    def format_commands(self, ctx, formatter):
        """The command list from COMMANDS, without importing any command's module."""
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def main(self, args=None, prog_name=None, **extra):
        """Click's own usage errors as one line too, with exit code 2."""
        for flag in passwords_in_flags(sys.argv[1:] if args is None else list(args)):
            click.echo(f"warning: {flag} carries a password, which `ps` shows every user of this machine; "
                       f"set {URL_FLAGS[flag]} instead", err=True)
        try:
            result = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.ClickException as e:
            click.echo(f"error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except (click.Abort, KeyboardInterrupt):  # also one raised while a command's cleanup ran
            click.echo("interrupted", err=True)
            sys.exit(130)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BptError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as e:
            redis = sys.modules.get("redis")  # imported by whichever command talked to Redis
            if redis is not None and isinstance(e, redis.RedisError):
                click.echo(f"error: Redis: {e}", err=True)
                sys.exit(4)
            raise


@click.group(cls=BptGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bpt")
@click.pass_context
def main(ctx):
    """bpt: train a CNN across Celery workers through a versioned Redis weight store.

    Start with `bpt train --dataset digits`: it runs everything on this machine.
    Settings come from BPT_* environment variables; flags win.
    """
    try:
        ctx.obj = Settings.from_env()
    except BptError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)


URL_FLAGS = {"--redis-url": "BPT_REDIS_URL", "--broker-url": "BPT_BROKER_URL", "--weights-url": "BPT_WEIGHTS_URL"}


def passwords_in_flags(argv: list[str]) -> list[str]:
    """The URL flags on this command line whose URL holds a password (scheme://[user]:PASSWORD@):
    a command line is visible to every local user (issue 26, finding 11)."""
    found = []
    for i, arg in enumerate(argv):
        flag, _, value = arg.partition("=")
        if flag in URL_FLAGS:
            value = value or (argv[i + 1] if i + 1 < len(argv) else "")
            netloc = value.split("://", 1)[1].split("/", 1)[0] if "://" in value else ""
            if "@" in netloc and ":" in netloc.rsplit("@", 1)[0]:
                found.append(flag)
    return list(dict.fromkeys(found))
