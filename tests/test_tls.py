"""TLS end to end (issue 12, item 5), with real processes and certificates made here
by `openssl`: a gateway serving TLS (and one requiring client certificates), the SDK
(async and sync) and the CLI talking to it; a TLS redis-server with an ACL user under
the gateway and the executor. Loopback only; every process is stopped by its pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conveyor.settings import Settings
from conveyor.v1 import job_pb2
from conveyor_client import AsyncConveyorClient, ConveyorClient, ConveyorRpcError
from conveyor_client._common import channel_target
from tests.support.processes import Process, Stack, free_port, spawn, stack_env, wait_for

ROOT = Path(__file__).resolve().parents[1]
CONVEYOR = str(Path(sys.executable).with_name("conveyor"))
NOOP = {"noop": {"sleep": "0.05s"}}
#: Auth (issue 12, items 1-3) is not what these tests are about: loopback gateways without it.
NO_AUTH = {"CONVEYOR_AUTH": "off"}


# --- certificates ----------------------------------------------------------------------
@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA nobody here trusts
    other_client_cert: Path  # signed by other_ca
    other_client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _make_ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN=Conveyor test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=d)


def _make_leaf(d: Path, name: str, ca: str, ext: str) -> None:
    (d / f"{name}.ext").write_text(ext)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    _make_ca(d, "ca")
    _make_ca(d, "other-ca")
    _make_leaf(d, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
               "basicConstraints=CA:FALSE\n")
    _make_leaf(d, "client", "ca", "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n")
    _make_leaf(d, "other-client", "other-ca", "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n")
    return Pki(ca=d / "ca.pem", server_cert=d / "server.pem", server_key=d / "server.key",
               client_cert=d / "client.pem", client_key=d / "client.key", other_ca=d / "other-ca.pem",
               other_client_cert=d / "other-client.pem", other_client_key=d / "other-client.key")


def creds(pki: Pki, *, client: bool = False) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=pki.client_key.read_bytes() if client else None,
        certificate_chain=pki.client_cert.read_bytes() if client else None,
    )


# --- processes ---------------------------------------------------------------------------
def start_tls_gateway(stack: Stack, credentials: grpc.ChannelCredentials, **extra_env: str) -> str:
    """A gateway of `stack` serving TLS, SERVING (health over TLS) before this returns;
    stopped by pid with the stack. Returns its address."""
    stack.start_gateway(credentials, **extra_env)
    return stack.gateway_targets[-1]


@pytest.fixture(scope="module")
def tls_stack(redis_url: str, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A gateway serving TLS (no client certificates asked for) and an executor."""
    data = tmp_path_factory.mktemp("tls-stack")
    env = stack_env(redis_url, data, CONVEYOR_TLS_CERT_FILE=str(pki.server_cert),
                    CONVEYOR_TLS_KEY_FILE=str(pki.server_key), **NO_AUTH)
    s = Stack(redis_url, env, data / "logs")
    try:
        start_tls_gateway(s, creds(pki))
        s.start_executor()
        yield s
    finally:
        s.stop()
        s.print_problems()


@pytest.fixture(scope="module")
def mtls_target(tls_stack: Stack, pki: Pki) -> str:
    """A second gateway on the same store that requires client certificates from `ca`."""
    return start_tls_gateway(tls_stack, creds(pki, client=True), CONVEYOR_GRPC_ADDR=f"127.0.0.1:{free_port()}",
                             CONVEYOR_TLS_CLIENT_CA_FILE=str(pki.ca))


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return subprocess.run([CONVEYOR, *args], check=False, capture_output=True, text=True, timeout=timeout,
                          env={**base, **(env or {})}, cwd=ROOT)


# --- the SDK and the CLI against a TLS gateway ---------------------------------------------
async def test_async_sdk_runs_a_job_over_tls(tls_stack: Stack, pki: Pki) -> None:
    async with AsyncConveyorClient(tls_stack.grpc_target, ca_cert=pki.ca) as client:
        assert client.tls
        submitted = await client.submit(NOOP)
        job = await client.wait(submitted.id, timeout=30)
        assert job.state == job_pb2.JOB_STATE_COMPLETED
        events = [m async for m in client.watch(submitted.id)]
        assert events, "WatchJob streamed over TLS"


def test_sync_sdk_runs_a_job_over_tls_with_a_grpcs_target(tls_stack: Stack, pki: Pki) -> None:
    with ConveyorClient(f"grpcs://{tls_stack.grpc_target}", ca_cert=str(pki.ca)) as client:
        assert client.tls
        submitted = client.submit(NOOP)
        assert client.wait(submitted.id, timeout=30).state == job_pb2.JOB_STATE_COMPLETED
        assert client.health() == "SERVING"


def test_cli_submit_watch_over_tls(tls_stack: Stack, pki: Pki, tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_text('{"noop": {"sleep": "0.05s"}}')
    flags = ("--target", tls_stack.grpc_target, "--tls", "--ca-cert", str(pki.ca))
    done = run_cli("submit", str(job), "--watch", *flags)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "COMPLETED" in done.stdout
    # The same from the environment: CONVEYOR_TLS and CONVEYOR_CA_CERT.
    env = {"CONVEYOR_TLS": "1", "CONVEYOR_CA_CERT": str(pki.ca)}
    done = run_cli("submit", str(job), "--watch", "-q", "--target", tls_stack.grpc_target, env=env)
    assert done.returncode == 0, done.stderr + done.stdout
    assert run_cli("health", "--target", tls_stack.grpc_target, env=env).stdout.strip() == "SERVING"


def test_cli_without_tls_or_with_another_ca_fails_with_a_hint(tls_stack: Stack, pki: Pki, tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_text('{"noop": {}}')
    plain = run_cli("submit", str(job), "--target", tls_stack.grpc_target)
    assert plain.returncode == 1
    assert "UNAVAILABLE" in plain.stderr and "--tls" in plain.stderr, plain.stderr
    other = run_cli("submit", str(job), "--target", tls_stack.grpc_target, "--ca-cert", str(pki.other_ca))
    assert other.returncode == 1
    assert "UNAVAILABLE" in other.stderr and "--ca-cert" in other.stderr, other.stderr
    missing = run_cli("submit", str(job), "--target", tls_stack.grpc_target, "--ca-cert", str(tmp_path / "nope.pem"))
    assert missing.returncode == 1
    assert "nope.pem: cannot read" in missing.stderr, missing.stderr


# --- refusals ----------------------------------------------------------------------------
async def test_a_plaintext_client_is_refused(tls_stack: Stack) -> None:
    async with AsyncConveyorClient(tls_stack.grpc_target, timeout=5) as client:
        assert not client.tls
        with pytest.raises(ConveyorRpcError) as err:
            await client.submit(NOOP)
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(tls_stack.grpc_target) as ch, pytest.raises(grpc.RpcError) as raw:
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert raw.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("trust", ["another CA", "the system's CAs"])
async def test_a_client_that_does_not_trust_the_ca_is_refused(tls_stack: Stack, pki: Pki, trust: str) -> None:
    kwargs: dict[str, Any] = {"ca_cert": pki.other_ca} if trust == "another CA" else {"tls": True}
    async with AsyncConveyorClient(tls_stack.grpc_target, timeout=5, **kwargs) as client:
        assert client.tls
        with pytest.raises(ConveyorRpcError) as err:
            await client.submit(NOOP)
    assert err.value.code == grpc.StatusCode.UNAVAILABLE


# --- mTLS ----------------------------------------------------------------------------------
async def test_mtls_refuses_a_client_without_a_certificate(mtls_target: str, pki: Pki) -> None:
    async with AsyncConveyorClient(mtls_target, ca_cert=pki.ca, timeout=5) as client:
        with pytest.raises(ConveyorRpcError) as err:
            await client.submit(NOOP)
    assert err.value.code == grpc.StatusCode.UNAVAILABLE


async def test_mtls_refuses_a_certificate_of_another_ca(mtls_target: str, pki: Pki) -> None:
    async with AsyncConveyorClient(mtls_target, ca_cert=pki.ca, client_cert=pki.other_client_cert,
                                   client_key=pki.other_client_key, timeout=5) as client:
        with pytest.raises(ConveyorRpcError) as err:
            await client.submit(NOOP)
    assert err.value.code == grpc.StatusCode.UNAVAILABLE


async def test_mtls_runs_a_job_for_a_client_certificate_of_the_ca(mtls_target: str, pki: Pki) -> None:
    async with AsyncConveyorClient(mtls_target, ca_cert=pki.ca, client_cert=pki.client_cert,
                                   client_key=pki.client_key) as client:
        submitted = await client.submit(NOOP)
        assert (await client.wait(submitted.id, timeout=30)).state == job_pb2.JOB_STATE_COMPLETED


def test_cli_over_mtls(mtls_target: str, pki: Pki, tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_text('{"noop": {}}')
    base = ("--target", mtls_target, "--ca-cert", str(pki.ca))
    refused = run_cli("submit", str(job), *base)
    assert refused.returncode == 1 and "--client-cert" in refused.stderr, refused.stderr
    env = {"CONVEYOR_CLIENT_CERT": str(pki.client_cert), "CONVEYOR_CLIENT_KEY": str(pki.client_key)}
    done = run_cli("submit", str(job), "--watch", *base, "--client-cert", str(pki.client_cert),
                   "--client-key", str(pki.client_key))
    assert done.returncode == 0, done.stderr + done.stdout
    assert run_cli("health", *base, env=env).stdout.strip() == "SERVING"


def test_the_gateway_refuses_to_start_with_a_key_that_is_not_the_certificates(
    redis_url: str, pki: Pki, tmp_path: Path
) -> None:
    env = stack_env(redis_url, tmp_path, CONVEYOR_TLS_CERT_FILE=str(pki.server_cert),
                    CONVEYOR_TLS_KEY_FILE=str(pki.client_key), **NO_AUTH)
    p = spawn("gateway", [sys.executable, "-m", "gateway.main"], env, tmp_path / "logs")
    try:
        assert p.proc.wait(60) != 0
    finally:
        p.kill()
    assert "CONVEYOR_TLS_CERT_FILE and CONVEYOR_TLS_KEY_FILE are not a certificate and its key" in p.log(), p.log()


# --- a TLS redis-server with an ACL user ----------------------------------------------------------
REDIS_USER, REDIS_SECRET = "conveyor", "s3cret/with@odd:chars"


@dataclass
class TlsRedis:
    process: Process
    port: int
    tls_env: dict[str, str]  # the services' TLS settings
    test_url: str  # for this test's own redis-py clients (TLS files as query arguments)

    def service_url(self, password: str = REDIS_SECRET) -> str:
        return f"rediss://{REDIS_USER}:{quote(password, safe='')}@127.0.0.1:{self.port}/0"


@pytest.fixture(scope="module")
def tls_redis(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    """redis-server on loopback speaking only TLS, wanting client certificates of `ca`,
    the default user off and one ACL user with a password."""
    d = tmp_path_factory.mktemp("tls-redis")
    port = free_port()
    argv = ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(pki.server_cert), "--tls-key-file", str(pki.server_key),
            "--tls-ca-cert-file", str(pki.ca), "--tls-auth-clients", "yes",
            "--save", "", "--appendonly", "no", "--dir", str(d), "--maxclients", "2000",
            "--user", "default", "off",
            "--user", REDIS_USER, "on", f">{REDIS_SECRET}", "~*", "&*", "+@all"]
    p = spawn("redis-tls", argv, dict(os.environ), d)
    files = {"ssl_ca_certs": str(pki.ca), "ssl_certfile": str(pki.client_cert), "ssl_keyfile": str(pki.client_key)}
    r = TlsRedis(p, port,
                 tls_env={"CONVEYOR_REDIS_TLS_CA_FILE": str(pki.ca),
                          "CONVEYOR_REDIS_TLS_CERT_FILE": str(pki.client_cert),
                          "CONVEYOR_REDIS_TLS_KEY_FILE": str(pki.client_key)},
                 test_url="")
    r.test_url = f"{r.service_url()}?{urlencode(files)}"
    client = redis.Redis.from_url(r.test_url)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            if not p.alive():
                raise RuntimeError(f"redis-server exited:\n{p.log()}") from None
            return False

    try:
        wait_for(up, 10, "TLS redis-server")
        # Plaintext and the default user get nowhere: the server is what the tests say.
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(pki.ca),
                        ssl_certfile=str(pki.client_cert), ssl_keyfile=str(pki.client_key)).ping()
        client.close()
        yield r
    finally:
        p.stop()


def test_services_run_a_job_on_a_tls_redis_with_an_acl_user(tls_redis: TlsRedis, tmp_path: Path) -> None:
    env = stack_env(tls_redis.service_url(), tmp_path, **tls_redis.tls_env, **NO_AUTH)
    s = Stack(tls_redis.test_url, env, tmp_path / "logs")
    try:
        s.start_gateway()
        s.start_executor()
        with ConveyorClient(s.grpc_target) as client:
            submitted = client.submit(NOOP)
            assert client.wait(submitted.id, timeout=30).state == job_pb2.JOB_STATE_COMPLETED
        with s.redis() as r:
            names = {c["name"] for c in r.client_list()}
            users = {c["user"] for c in r.client_list()}
        assert {"conveyor-gateway", "conveyor-executor", "conveyor-executor-wake"} <= names, names
        assert users == {REDIS_USER}, users
    finally:
        s.stop()
        s.print_problems()


def test_the_host_and_port_settings_take_the_acl_user_and_tls_too(tls_redis: TlsRedis, tmp_path: Path) -> None:
    """REDIS_HOST/REDIS_PORT/REDIS_PASSWORD (the seeds' names) with CONVEYOR_REDIS_USERNAME
    and the TLS files: no URL at all."""
    env = stack_env("unused", tmp_path, **tls_redis.tls_env, **NO_AUTH)
    del env["CONVEYOR_REDIS_URL"]
    env.update({"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(tls_redis.port), "REDIS_PASSWORD": REDIS_SECRET,
                "CONVEYOR_REDIS_USERNAME": REDIS_USER})
    s = Stack(tls_redis.test_url, env, tmp_path / "logs")
    try:
        s.start_gateway()
        with ConveyorClient(s.grpc_target) as client:
            assert client.health() == "SERVING"
            client.submit(NOOP)  # the store took it (nothing runs it here)
    finally:
        s.stop()


@pytest.mark.parametrize("problem", ["a wrong password", "no CA file"])
def test_the_services_do_not_start_on_a_tls_redis_they_cannot_use(
    tls_redis: TlsRedis, tmp_path: Path, problem: str
) -> None:
    tls_env = dict(tls_redis.tls_env)
    password = REDIS_SECRET
    if problem == "a wrong password":
        password, why = "wrong", "invalid username-password pair"
    else:
        del tls_env["CONVEYOR_REDIS_TLS_CA_FILE"]
        why = "CERTIFICATE_VERIFY_FAILED"
    env = stack_env(tls_redis.service_url(password), tmp_path, **tls_env, **NO_AUTH)
    gateway = spawn("gateway", [sys.executable, "-m", "gateway.main"], env, tmp_path / "logs")
    executor = spawn("executor", [sys.executable, "-m", "executor.main"], env, tmp_path / "logs")
    try:
        assert gateway.proc.wait(60) != 0
        assert why in gateway.log(), gateway.log()
        # The executor's supervisor starts its worker again and again; each one says why.
        wait_for(lambda: why in executor.log(), 60, f"the executor's log to say {why}")
    finally:
        gateway.kill()
        executor.stop()
    with redis.Redis.from_url(tls_redis.test_url) as r:
        assert not r.keys(f"{env['CONVEYOR_KEY_PREFIX']}:*")


# --- settings ------------------------------------------------------------------------------
def test_settings_compose_the_redis_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("CONVEYOR_", "REDIS_")):
            monkeypatch.delenv(name)
    assert Settings().effective_redis_url == "redis://127.0.0.1:6379/0"
    monkeypatch.setenv("REDIS_PASSWORD", "p@ss")
    assert Settings().effective_redis_url == "redis://:p%40ss@127.0.0.1:6379/0"
    monkeypatch.setenv("CONVEYOR_REDIS_USERNAME", "app")
    monkeypatch.setenv("CONVEYOR_REDIS_TLS_CA_FILE", "/etc/ca one.pem")
    assert Settings().effective_redis_url == "rediss://app:p%40ss@127.0.0.1:6379/0?ssl_ca_certs=%2Fetc%2Fca+one.pem"
    monkeypatch.setenv("CONVEYOR_REDIS_URL", "rediss://u:p@h:1/0?ssl_ca_certs=/mine.pem")
    assert Settings().effective_redis_url == "rediss://u:p@h:1/0?ssl_ca_certs=/mine.pem"  # the URL's own wins
    monkeypatch.setenv("CONVEYOR_REDIS_URL", "redis://h:1/0")
    with pytest.raises(ValueError, match="not rediss://"):
        Settings()
    monkeypatch.delenv("CONVEYOR_REDIS_TLS_CA_FILE")
    monkeypatch.setenv("CONVEYOR_TLS_CLIENT_CA_FILE", str(tmp_path / "ca.pem"))
    with pytest.raises(ValueError, match="mTLS"):
        Settings()


def test_channel_target_schemes(pki: Pki) -> None:
    assert channel_target("127.0.0.1:1") == ("127.0.0.1:1", None)
    assert channel_target("grpc://127.0.0.1:1") == ("127.0.0.1:1", None)
    target, credentials = channel_target("https://localhost:1/")
    assert target == "localhost:1" and credentials is not None
    assert channel_target("dns:///h:1", ca_cert=pki.ca)[1] is not None
    with pytest.raises(ValueError, match="go together"):
        channel_target("h:1", client_cert=pki.client_cert)
    with pytest.raises(ValueError, match="says plaintext"):
        channel_target("http://h:1", tls=True)
    with pytest.raises(ValueError, match="not a PEM file"):
        channel_target("h:1", ca_cert=pki.server_key.with_suffix(".ext"))


@pytest.mark.timeout(180)
def test_conveyor_up_with_gateway_tls_and_client_certificates(pki: Pki, tmp_path: Path) -> None:
    """`conveyor up` with the gateway's TLS settings checks its gateway over TLS (with
    the client certificate it requires), and the CLI on this machine, given the same
    environment, talks TLS to it without a flag."""
    from tests.test_cli import marked_processes, run_cli, start_conveyor

    mark = os.urandom(8).hex()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(
        CONVEYOR_GRPC_ADDR=f"127.0.0.1:{free_port()}", CONVEYOR_DATA_DIR=str(tmp_path / "data"),
        CONVEYOR_TEST_MARK=mark, CONVEYOR_EXECUTOR_SLOTS="2", CONVEYOR_EXECUTOR_KINDS="noop", PYTHONUNBUFFERED="1",
        CONVEYOR_TLS_CERT_FILE=str(pki.server_cert), CONVEYOR_TLS_KEY_FILE=str(pki.server_key),
        CONVEYOR_TLS_CLIENT_CA_FILE=str(pki.ca),
    )
    # Without a client certificate for its own check, `up` says what is missing, at once.
    refused = run_cli("up", env=env)
    assert refused.returncode == 1 and "CONVEYOR_CLIENT_CERT" in refused.stderr, refused.stderr
    env.update(CONVEYOR_CA_CERT=str(pki.ca), CONVEYOR_CLIENT_CERT=str(pki.client_cert),
               CONVEYOR_CLIENT_KEY=str(pki.client_key))
    up = start_conveyor("up", "--grace", "10", env=env)
    try:
        up.wait_line(r"Conveyor is up: gRPC \(TLS\) on 127\.0\.0\.1:\d+", 90)
        health = run_cli("health", env=env)
        assert (health.returncode, health.stdout) == (0, "SERVING\n"), health.stderr
        plain = run_cli("health", "--no-tls", env=env)
        assert plain.returncode != 0
        up.proc.terminate()
        assert up.finish(60) == 0, up.output
    finally:
        if up.proc.poll() is None:
            up.proc.kill()
        for pid in marked_processes(mark):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
