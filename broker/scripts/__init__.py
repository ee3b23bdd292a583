"""The Lua scripts, each in its own .lua file, registered once per Redis client."""

from __future__ import annotations

from importlib import resources

NAMES = ("push", "reject", "stage", "commit_round", "release_lease", "transition", "rate", "delete_orphan",
         "lease", "fenced", "renew_claim", "renew_lease", "observe_val", "keep_best")


def source(name: str) -> str:
    return resources.files(__name__).joinpath(f"{name}.lua").read_text()


def register(client) -> dict:
    """Register every script on this client (EVALSHA, reloaded if Redis forgot it)."""
    return {name: client.register_script(source(name)) for name in NAMES}
