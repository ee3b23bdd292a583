"""docker-compose.yml: valid, and in step with the CLI it runs."""

import os
import subprocess

import pytest
import yaml
from click.testing import CliRunner

from bpt.cli.main import main
from bpt.settings import Settings

from benchmarks.containers import compose_tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPOSE = os.path.join(ROOT, "docker-compose.yml")
ENV = {"BPT_REDIS_PASSWORD": "example", "FLOWER_BASIC_AUTH": "admin:example"}


@pytest.fixture(scope="module")
def compose():
    with open(COMPOSE) as f:
        return yaml.safe_load(f)


def test_services_are_there(compose):
    assert {"redis", "worker", "flower", "cli"} <= set(compose["services"])
    redis = compose["services"]["redis"]
    assert "--appendonly" in redis["command"] and "--requirepass" in redis["command"]
    assert "healthcheck" in redis
    assert "ports" not in compose["services"]["worker"]  # scale without port clashes


def test_the_rabbitmq_and_cluster_profiles_are_there_and_the_workers_can_use_them(compose):
    services = compose["services"]
    assert services["rabbitmq"]["profiles"] == ["rabbitmq"] and "healthcheck" in services["rabbitmq"]
    nodes = [n for n in services if n.startswith("redis-c")]
    assert len(nodes) == 3 and all("--cluster-enabled" in services[n]["command"] for n in nodes)
    assert services["cluster-init"]["profiles"] == ["cluster"]
    for name in ("worker", "cli"):
        assert {"BPT_BROKER_URL", "BPT_WEIGHTS_URL"} <= set(services[name]["environment"])


def test_commands_are_real_cli_commands_and_options(compose):
    for name in ("worker", "flower"):
        command = compose["services"][name]["command"]
        options = [a.split("=")[0] for a in command if a.startswith("--")]
        help_text = CliRunner().invoke(main, [command[0], "--help"]).output
        assert all(o in help_text for o in options), (name, options)


def test_environment_names_are_ones_bpt_reads(compose):
    known = {Settings.ENV_PREFIX + f.upper() for f in Settings.__dataclass_fields__} | {"BPT_FLOWER_AUTH"}
    for name in ("worker", "flower", "cli"):
        env = compose["services"][name].get("environment", {})
        assert set(env) <= known, set(env) - known


@pytest.mark.skipif(compose_tool() is None,
                    reason="neither docker-compose nor the docker compose plugin is installed (.ci/run installs docker-compose)")
def test_docker_compose_config_validates():
    tool = compose_tool()
    result = subprocess.run(tool + ["-f", COMPOSE, "config", "-q"], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, **ENV}, timeout=60)
    assert result.returncode == 0, result.stderr
