import pytest

from bpt.errors import ConfigError
from bpt.settings import Settings


def test_env_then_flags():
    s = Settings.from_env({"BPT_WORKERS": "3", "BPT_REDIS_URL": "redis://h:1/0"})
    assert s.workers == 3 and s.redis_url == "redis://h:1/0"
    assert s.override(workers=5, redis_url=None).workers == 5
    assert s.override(redis_url=None).redis_url == "redis://h:1/0"  # None: flag not given


@pytest.mark.parametrize("env,message", [({"BPT_WORKERS": "0"}, "workers"), ({"BPT_WORKERS": "x"}, "number"),
                                         ({"BPT_REDIS_URL": "http://x"}, "redis://")])
def test_bad_settings_name_the_problem(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)
