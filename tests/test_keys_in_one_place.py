"""Every Redis key is built in broker/keys.py (issue 15, item 7): a key spelled out anywhere
else is one that GC, the docs and Redis Cluster's hash tags can miss."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
KEY_LITERAL = re.compile(r"""(?<!["'])["']bpt:[^ ]|\.keys\.base\b|f["']\{PREFIX\}""")


def test_no_module_but_broker_keys_builds_a_redis_key():
    offenders = []
    for package in ("bpt", "broker", "workers", "cli", "benchmarks"):
        for path in (ROOT / package).rglob("*.py"):
            if path == ROOT / "broker" / "keys.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if KEY_LITERAL.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
