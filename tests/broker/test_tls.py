"""Redis over TLS (rediss://) against a real TLS redis-server, with a throw-away CA made
here: the CA and a client certificate are needed and enough, and a whole job runs over it
(weights, job state and Celery's tasks alike)."""

import shutil
import subprocess
import sys

import pytest

from bpt.errors import ConfigError, ConnectionFailed
from bpt.settings import Settings
from bpt.broker.connection import connect
from bpt.broker.processes import free_port
from bpt.broker.redis_server import PrivateRedis

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make certificates")


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """ca.pem; server.pem/server.key for 127.0.0.1 (by IP SAN); client.pem/client.key."""
    d = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=bpt test CA",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=bpt {name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", "san.ext", "-out", f"{name}.pem", cwd=d)
    return d


@pytest.fixture(scope="module")
def tls_redis(certificates):
    """A redis-server whose TLS port asks every client for a certificate signed by the CA."""
    port = free_port()
    d = certificates
    extra = ("--tls-port", str(port), "--tls-cert-file", str(d / "server.pem"), "--tls-key-file", str(d / "server.key"),
             "--tls-ca-cert-file", str(d / "ca.pem"), "--tls-auth-clients", "yes")
    with PrivateRedis(extra=extra):
        yield f"rediss://127.0.0.1:{port}/0"


def tls_settings(url, d, **more):
    return Settings(redis_url=url, redis_ca=str(d / "ca.pem"), redis_cert=str(d / "client.pem"),
                    redis_key=str(d / "client.key"), **more).validate()


def test_rediss_with_the_ca_and_a_client_certificate_connects_and_without_them_is_refused(tls_redis, certificates):
    d = certificates
    assert connect(tls_settings(tls_redis, d).redis_url).ping()
    with pytest.raises(ConnectionFailed, match="certificate verify failed"):  # the system's CAs do not know ours
        connect(tls_redis)
    without_cert = Settings(redis_url=tls_redis, redis_ca=str(d / "ca.pem")).validate()
    with pytest.raises(ConnectionFailed, match=r"cannot reach Redis at rediss://127\.0\.0\.1:\d+/0:"):
        connect(without_cert.redis_url)  # the server asks for a client certificate
    with pytest.raises(ConfigError, match="need a rediss:// Redis URL"):
        Settings(redis_url="redis://127.0.0.1:6379/0", redis_ca=str(d / "ca.pem")).validate()


@pytest.mark.slow
def test_a_job_runs_end_to_end_over_tls_from_the_command_line(tls_redis, certificates, tmp_path):
    from bpt.workers.launcher import LocalWorkers

    d = certificates
    settings = tls_settings(tls_redis, d, workers=2, poll_seconds=0.05)
    with LocalWorkers(settings, 2):
        done = subprocess.run([sys.executable, "-m", "bpt.cli", "train", "--redis-url", tls_redis, "--redis-ca",
                               str(d / "ca.pem"), "--redis-cert", str(d / "client.pem"), "--redis-key",
                               str(d / "client.key"), "--epochs", "5", "--quiet", "--out", str(tmp_path)],
                              capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "done: test accuracy 0.9" in done.stdout or "done: test accuracy 1.0" in done.stdout, done.stdout


def test_a_server_certificate_for_another_host_is_refused(certificates, tmp_path):
    """Issue 26, finding 10: with redis-py 5.x (which pyproject allowed) hostnames were not
    checked unless asked, and a certificate for evil.example was accepted for 127.0.0.1. bpt
    now needs redis-py >= 6, which checks them; this server presents such a certificate."""
    d = certificates
    (tmp_path / "evil.ext").write_text("subjectAltName=DNS:evil.example\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=evil.example", "-keyout", str(tmp_path / "evil.key"),
             "-out", str(tmp_path / "evil.csr"), cwd=d)
    _openssl("x509", "-req", "-in", str(tmp_path / "evil.csr"), "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", str(tmp_path / "evil.ext"), "-out", str(tmp_path / "evil.pem"), cwd=d)
    port = free_port()
    extra = ("--tls-port", str(port), "--tls-cert-file", str(tmp_path / "evil.pem"), "--tls-key-file",
             str(tmp_path / "evil.key"), "--tls-ca-cert-file", str(d / "ca.pem"), "--tls-auth-clients", "yes")
    with PrivateRedis(extra=extra):
        with pytest.raises(ConnectionFailed, match="(?i)hostname|match"):
            connect(tls_settings(f"rediss://127.0.0.1:{port}/0", d).redis_url).ping()
