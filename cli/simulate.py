"""`bpt simulate`: IDPA against a static split and a greedy work queue, on a simulated cluster."""

from __future__ import annotations

import dataclasses
import json

import click

from bpt.errors import ConfigError
from bpt.plan.simulator import SimConfig, simulate as run_simulation


def _fraction(text: str) -> float:
    value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    if not 0 <= value < 1:
        raise ConfigError(f"a fraction must be in [0, 1) (or 0%..99%), got {text}")
    return value


@click.command()
@click.option("--nodes", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--dist", type=click.Choice(["lognormal", "uniform", "constant"]), default="lognormal", show_default=True,
              help="How node throughputs are drawn (mean --mean-rate).")
@click.option("--sigma", type=click.FloatRange(min=0), default=0.5, show_default=True, help="Lognormal shape.")
@click.option("--mean-rate", type=click.FloatRange(min=1), default=1000.0, show_default=True, help="Samples/s.")
@click.option("--samples-per-node", type=click.IntRange(min=1), default=100_000, show_default=True)
@click.option("--failures", default="0", show_default=True, help="Fraction of nodes that die mid-epoch, e.g. 2%.")
@click.option("--joins", default="0", show_default=True, help="Fraction of nodes that join late.")
@click.option("--overhead", type=click.FloatRange(min=0), default=0.02, show_default=True, help="Seconds per task.")
@click.option("--transfer", type=click.FloatRange(min=0), default=0.01, show_default=True,
              help="Seconds per task to move the weights.")
@click.option("--heartbeat-timeout", type=click.FloatRange(min=0), default=5.0, show_default=True)
@click.option("--chunk", type=click.IntRange(min=1), default=512, show_default=True, help="Task size of the baselines.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def simulate(nodes, dist, sigma, mean_rate, samples_per_node, failures, joins, overhead, transfer,
             heartbeat_timeout, chunk, seed, as_json):
    """Simulate one epoch and print each policy's makespan against the ideal bound.

    Pure and seeded: the same policy objects as the scheduler, no Redis, no workers.
    """
    cfg = SimConfig(nodes=nodes, samples_per_node=samples_per_node, dist=dist, mean_rate=mean_rate, sigma=sigma,
                    failures=_fraction(failures), joins=_fraction(joins), overhead=overhead, transfer=transfer,
                    heartbeat_timeout=heartbeat_timeout, chunk=chunk, seed=seed)
    results = [run_simulation(cfg, policy) for policy in ("static", "greedy", "idpa")]
    if as_json:
        click.echo(json.dumps({"config": dataclasses.asdict(cfg),
                               "results": [{**dataclasses.asdict(r), "ratio": r.ratio} for r in results]}))
        return
    click.echo(f"{nodes} nodes, {dist} throughputs (mean {mean_rate:g}/s), {cfg.samples} samples, "
               f"failures {cfg.failures:.0%}, joins {cfg.joins:.0%}; ideal bound {results[0].ideal:.1f} s")
    click.echo(f"{'policy':<8}{'makespan s':>12}{'/ ideal':>10}{'tasks':>10}{'reassigned':>12}")
    for r in results:
        click.echo(f"{r.policy:<8}{r.makespan:>12.1f}{r.ratio:>10.3f}{r.tasks:>10}{r.reassigned_samples:>12}")
