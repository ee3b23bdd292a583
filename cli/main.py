"""The `bpt` command group: settings from BPT_* variables, errors as one line and an exit code.

Exit codes: 0 ok, 1 other bpt error, 2 bad flag or setting, 3 bad data, 4 Redis unreachable
or refused, 5 unknown job, 6 job failed or was cancelled, 7 corrupt blob, 8 job finished no better
than chance (outputs written), 9 this machine cannot build the model (a plug-in missing or of
another version), 130 interrupted.
"""

from __future__ import annotations

import sys

import click
import redis

from bpt import __version__
from bpt.errors import BptError
from bpt.settings import Settings


class BptGroup(click.Group):
    def main(self, args=None, prog_name=None, **extra):
        """Click's own usage errors as one line too, with exit code 2."""
        try:
            result = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.ClickException as e:
            click.echo(f"error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("interrupted", err=True)
            sys.exit(130)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BptError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except redis.RedisError as e:
            click.echo(f"error: Redis: {e}", err=True)
            sys.exit(4)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


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


def _register() -> None:
    from . import control, export, flower, jobs, report, simulate, train, worker

    for command in (train.train, worker.worker, flower.flower, jobs.jobs, jobs.status, jobs.wait, jobs.cancel,
                    control.pause, control.resume, control.logs, report.report, export.export, export.predict,
                    jobs.gc, jobs.workers, simulate.simulate):
        main.add_command(command)


_register()
