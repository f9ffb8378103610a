"""Fixtures that run a real `baton serve` over loopback and point real AWS clients at it.

Every server gets a fresh data directory, a free port and a random account id, so runs on
one PostgreSQL database never see each other's secrets. The PostgreSQL engine runs when
BATON_TEST_POSTGRES_URL is set; otherwise those tests are skipped with a visible reason.
"""

import json
import os
import random
import re
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

REPO = Path(__file__).resolve().parents[2]
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
BATON = Path(os.environ.get("BATON_BIN", TARGET_DIR / "debug" / "baton"))
REGION = "us-east-1"
ACCESS_KEY_ID = "BTNTESTBOOTSTRAP0001"
SECRET_ACCESS_KEY = "test-bootstrap-secret-access-key-0123456789"


# ---- Suite-wide leak check. Every secret value, password, access-key secret and session
# token that passes through a client in this run is remembered; when the run ends, every
# server log, audit file, audit dump and SQLite file of the run is scanned for each of them.

SENSITIVE_MEMBERS = {"SecretString", "SecretBinary", "RandomPassword", "SecretAccessKey", "SessionToken",
                     "Plaintext", "PrivateKeyPlaintext"}
SENSITIVE_MIN_LEN = 8
SENSITIVE = set()
SCANNED_FILES = []


def remember_sensitive(obj):
    """Records every sensitive member found in a request or response, at any depth."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in SENSITIVE_MEMBERS and isinstance(v, (str, bytes)) and len(v) >= SENSITIVE_MIN_LEN:
                SENSITIVE.add(v.encode() if isinstance(v, str) else bytes(v))
            else:
                remember_sensitive(v)
    elif isinstance(obj, list):
        for v in obj:
            remember_sensitive(v)


def _remember_params(params, **_):
    remember_sensitive(params)


def _remember_response(parsed, **_):
    remember_sensitive(parsed)


def scan_for_leaks(paths, values):
    """(path, value) for every value found in a file: the check run at the end of the suite."""
    found = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        for value in values:
            if value in data:
                found.append((str(path), value))
    return found


def pytest_sessionfinish(session, exitstatus):
    files = []
    for entry in SCANNED_FILES:
        path = Path(entry)
        files += [path] if path.is_file() else list(path.glob("*.db*")) if path.is_dir() else []
    leaks = scan_for_leaks(files, SENSITIVE)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    summary = (f"leak check: {len(SENSITIVE)} secret values of this run searched for in {len(files)} "
               f"server logs, audit logs and database files")
    if reporter:
        reporter.write_line(summary)
    if leaks:
        for path, value in leaks:
            line = f"LEAK: a secret value ({len(value)} bytes, starting {value[:3]!r}...) is in {path}"
            if reporter:
                reporter.write_line(line, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class BatonServer:
    data_dir: Path
    engine: str
    database_url: str | None = None
    account_id: str = field(default_factory=lambda: "".join(random.choice("0123456789") for _ in range(12)))
    port: int = field(default_factory=free_port)
    regions: str = "us-east-1,eu-west-1"
    extra_args: list = field(default_factory=list)
    extra_env: dict = field(default_factory=dict)
    process: subprocess.Popen | None = None
    scheme: str = "http"
    # The suite's receivers listen on loopback; the refusal without the flag is tested apart.
    allow_private_webhooks: bool = True
    metrics_token: str | None = field(default_factory=lambda: f"metrics-token-{random.randrange(1 << 60):x}")
    # Operator-defined command rotators: one <name>.toml each (see add_command_rotator).
    rotators_dir: Path | None = None

    @property
    def endpoint(self):
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def command(self):
        cmd = [
            str(BATON), "serve",
            "--data-dir", str(self.data_dir),
            "--listen", f"127.0.0.1:{self.port}",
            "--account-id", self.account_id,
            "--regions", self.regions,
            "--purge-interval-seconds", "1",
        ]
        if self.database_url:
            cmd += ["--database-url", self.database_url]
        if self.allow_private_webhooks:
            cmd += ["--allow-private-webhooks"]
        if self.metrics_token is not None:
            token_file = self.data_dir.parent / f"metrics-{self.port}.token"
            token_file.write_text(self.metrics_token)
            cmd += ["--metrics-token-file", str(token_file)]
        if self.rotators_dir is None:
            self.rotators_dir = self.data_dir.parent / f"rotators-{self.port}"
        self.rotators_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.rotators_dir.chmod(0o700)
        cmd += ["--rotators-dir", str(self.rotators_dir)]
        return cmd + self.extra_args

    def env(self):
        env = dict(os.environ)
        env.update({
            "BATON_BOOTSTRAP_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "BATON_BOOTSTRAP_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "RUST_LOG": "info",
        })
        env.update(self.extra_env)
        return env

    def start(self, wait=True):
        self.log = open(self.data_dir.parent / f"baton-{self.port}.log", "ab")
        SCANNED_FILES.extend([self.data_dir.parent / f"baton-{self.port}.log", self.data_dir])
        args = self.extra_args
        if "--audit-file" in args:
            SCANNED_FILES.append(args[args.index("--audit-file") + 1])
        self.process = subprocess.Popen(self.command(), env=self.env(), stdout=self.log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"baton serve exited with {self.process.returncode}:\n{self.read_log()}")
            try:
                ctx = None
                if self.scheme == "https":
                    import ssl
                    ctx = ssl.create_default_context(cafile=self.extra_env.get("CA_FILE"))
                with urllib.request.urlopen(f"{self.endpoint}/health", timeout=1, context=ctx) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"baton serve did not become healthy:\n{self.read_log()}")

    def add_command_rotator(self, name, argv, timeout_seconds=None, env=None, policy=None):
        """Defines a command rotator as an operator does: a private file in the rotators
        directory, with an execution policy if `policy` (a dict) is given. Returns its Lambda
        ARN."""
        lines = [f"name = {json.dumps(name)}", f"command = {json.dumps(list(argv))}"]
        if policy is not None:
            lines.append(f"policy = {json.dumps(json.dumps(policy))}")
        if timeout_seconds is not None:
            lines.append(f"timeout_seconds = {timeout_seconds}")
        if env:
            lines.append("env = { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in env.items()) + " }")
        if self.rotators_dir is None:
            self.command()
        path = self.rotators_dir / f"{name}.toml"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        return f"arn:aws:lambda:us-east-1:{self.account_id}:function:{name}"

    def metrics(self):
        """The Prometheus text of /metrics, fetched with the server's bearer token."""
        request = urllib.request.Request(f"{self.endpoint}/metrics",
                                         headers={"Authorization": f"Bearer {self.metrics_token}"})
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.read().decode()

    def read_log(self):
        self.log.flush()
        return (self.data_dir.parent / f"baton-{self.port}.log").read_text(errors="replace")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def client(self, service="secretsmanager", region=REGION, access_key=ACCESS_KEY_ID, secret_key=SECRET_ACCESS_KEY, **kw):
        client = boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=Config(retries={"max_attempts": 1, "mode": "standard"}),
            **kw,
        )
        client.meta.events.register("provide-client-params.*.*", _remember_params)
        client.meta.events.register("after-call.*.*", _remember_response)
        return client

    def dump_audit(self):
        """Writes the server's whole audit log to a file the leak check scans (for PostgreSQL,
        whose log is not in a file of the run)."""
        import awsraw
        entries, after = [], 0
        while True:
            status, out = awsraw.call(self, "baton.ListAuditEntries", {"AfterSeq": after, "MaxResults": 1000})
            if status != 200:
                break
            entries += out.get("Entries", [])
            if out.get("NextSeq") is None:
                break
            after = out["NextSeq"]
        path = self.data_dir.parent / f"audit-dump-{self.port}.json"
        path.write_text(json.dumps(entries))
        SCANNED_FILES.append(path)
        return entries


def engines():
    return ["sqlite", "postgres"]


def psql(url, sql):
    subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql], check=True, capture_output=True)


@pytest.fixture(scope="session", params=engines())
def engine(request):
    """The engine and its URL. Each PostgreSQL session gets a database of its own, created
    here and dropped afterwards, because a database belongs with exactly one root key."""
    if request.param == "postgres":
        url = os.environ.get("BATON_TEST_POSTGRES_URL")
        if not url:
            pytest.skip("SKIPPED: BATON_TEST_POSTGRES_URL is not set; PostgreSQL engine not tested")
        name = f"baton_test_{os.getpid()}_{random.randrange(1 << 30)}"
        psql(url, f"CREATE DATABASE {name}")
        base, _, _ = url.rpartition("/")
        yield ("postgres", f"{base}/{name}")
        psql(url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        return
    yield ("sqlite", None)


@pytest.fixture(scope="session")
def server(engine, tmp_path_factory):
    if not BATON.exists():
        pytest.fail(f"{BATON} not found: run `cargo build` first (scripts/test does)")
    name, url = engine
    base = tmp_path_factory.mktemp(f"baton-{name}")
    srv = BatonServer(data_dir=base / "data", engine=name, database_url=url,
                      extra_args=["--audit-file", str(base / "audit.jsonl")])
    srv.start()
    yield srv
    srv.dump_audit()
    srv.stop()


@pytest.fixture
def sm(server):
    return server.client()


@pytest.fixture
def unique_name(request):
    counter = getattr(unique_name, "counter", 0) + 1
    unique_name.counter = counter
    base = re.sub(r"[^A-Za-z0-9/_+=.@-]", "_", request.node.name[:40])
    return f"test/{base}-{counter}-{random.randrange(1 << 30)}"


@pytest.fixture
def fresh(tmp_path):
    """Servers of the test's own, on the embedded store, each in a fresh data directory."""
    servers = []

    def make(**kw):
        srv = BatonServer(data_dir=tmp_path / f"data{len(servers)}", engine="sqlite", **kw)
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()
