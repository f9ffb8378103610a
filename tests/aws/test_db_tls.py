"""TLS to every database Baton speaks to, in libpq's five sslmodes, against real servers:

- the store on the machine's PostgreSQL, which speaks TLS with Debian's snakeoil certificate
  for `localhost`;
- the baton-mysql rotator against a private `mariadbd` whose CA and server certificate this
  file makes with `openssl`, and against the machine's MariaDB, which has no TLS;
- the baton-postgres rotator against a private cluster that accepts TLS connections only.

Each verifying mode is tried with the right CA (works), a wrong CA (refused, with a clear error)
and a wrong host name (refused); `require` is tried against servers without TLS (refused).
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse

import pytest

from conftest import BatonServer, free_port, psql
from test_db_rotation import ScramPostgres, fast_policy, mariadb, rotate_and_wait  # noqa: F401 (a fixture)


# ---------------------------------------------------------------- certificates

def make_ca(directory, name):
    """A CA and a server certificate for `localhost` it signs; returns the paths."""
    d = os.path.join(directory, name)
    os.makedirs(d, exist_ok=True)

    def run(*args):
        done = subprocess.run(["openssl", *args], cwd=d, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", f"/CN=Baton test CA {name}")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return {k: os.path.join(d, f) for k, f in [("ca", "ca.pem"), ("cert", "server.pem"), ("key", "server.key")]}


@pytest.fixture(scope="module")
def cas():
    directory = tempfile.mkdtemp(prefix="baton-tls-")
    yield {"right": make_ca(directory, "right"), "wrong": make_ca(directory, "wrong"), "dir": directory}
    shutil.rmtree(directory, ignore_errors=True)


def no_tls_server():
    """A listener that answers PostgreSQL's SSLRequest with 'N' (no TLS here), as a server
    without TLS does. Returns its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(8)
                    conn.sendall(b"N")
                    conn.recv(1024)
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    return listener


# ---------------------------------------------------------------- the store on PostgreSQL

@pytest.fixture
def pg_url():
    url = os.environ.get("BATON_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("BATON_TEST_POSTGRES_URL is not set: TLS to PostgreSQL not tested")
    on = subprocess.run(["psql", url, "-Atc", "show ssl"], capture_output=True, text=True).stdout.strip()
    assert on == "on", "the machine's PostgreSQL speaks TLS (Debian's snakeoil certificate)"
    cert = subprocess.run(["psql", url, "-Atc", "show ssl_cert_file"], capture_output=True, text=True).stdout.strip()
    name = f"baton_tls_{os.getpid()}"
    psql(url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    psql(url, f"CREATE DATABASE {name}")
    u = urllib.parse.urlparse(url)
    yield {"admin": url, "db": name, "user": u.username or "postgres", "port": u.port or 5432, "snakeoil": cert}
    psql(url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def store_url(pg, host, **params):
    query = urllib.parse.urlencode(params)
    return f"postgres://{pg['user']}@{host}:{pg['port']}/{pg['db']}?{query}"


def serve_fails(tmp_path, url):
    """Starts `baton serve` on `url`, expects it to exit, and returns its log."""
    srv = BatonServer(data_dir=tmp_path / f"data-{free_port()}", engine="postgres", database_url=url)
    srv.start(wait=False)
    try:
        code = srv.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        srv.stop()
        pytest.fail(f"baton serve kept running on {url}")
    assert code != 0
    return srv.read_log()


def test_the_store_speaks_verified_tls_to_postgresql(tmp_path, pg_url):
    url = store_url(pg_url, "localhost", sslmode="verify-full", sslrootcert=pg_url["snakeoil"])
    srv = BatonServer(data_dir=tmp_path / "data", engine="postgres", database_url=url).start()
    try:
        sm = srv.client()
        sm.create_secret(Name="over-tls", SecretString="sealed-and-encrypted")
        assert sm.get_secret_value(SecretId="over-tls")["SecretString"] == "sealed-and-encrypted"
        # Every connection of the server to its database is encrypted: the pool and the listener.
        rows = subprocess.run(
            ["psql", pg_url["admin"], "-Atc",
             f"SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = '{pg_url['db']}'"],
            capture_output=True, text=True, check=True).stdout.split()
        assert rows and set(rows) == {"t"}, rows
    finally:
        srv.stop()


def test_the_store_refuses_postgresql_with_a_wrong_ca_or_host_name(tmp_path, pg_url, cas):
    log = serve_fails(tmp_path, store_url(pg_url, "localhost", sslmode="verify-full", sslrootcert=cas["wrong"]["ca"]))
    assert "sslmode=verify-full" in log and "UnknownIssuer" in log, log[-2000:]
    # The certificate names localhost, not 127.0.0.1.
    log = serve_fails(tmp_path, store_url(pg_url, "127.0.0.1", sslmode="verify-full", sslrootcert=pg_url["snakeoil"]))
    assert "sslmode=verify-full" in log and 'certificate not valid for name "127.0.0.1"' in log, log[-2000:]
    # A root certificate file that does not exist is named.
    log = serve_fails(tmp_path, store_url(pg_url, "localhost", sslmode="verify-ca", sslrootcert="/nonexistent/ca.pem"))
    assert "sslrootcert /nonexistent/ca.pem" in log, log[-2000:]
    log = serve_fails(tmp_path, store_url(pg_url, "localhost", sslmode="verify-everything"))
    assert 'sslmode "verify-everything" is not one of' in log, log[-2000:]


def test_verify_ca_checks_the_chain_but_not_the_host_name(tmp_path, pg_url):
    url = store_url(pg_url, "127.0.0.1", sslmode="verify-ca", sslrootcert=pg_url["snakeoil"])
    srv = BatonServer(data_dir=tmp_path / "data", engine="postgres", database_url=url).start()
    try:
        srv.client().list_secrets()
    finally:
        srv.stop()


def test_require_refuses_a_postgresql_server_without_tls(tmp_path):
    listener = no_tls_server()
    try:
        port = listener.getsockname()[1]
        log = serve_fails(tmp_path, f"postgres://postgres@127.0.0.1:{port}/x?sslmode=require")
        assert "sslmode=require" in log and "server does not support TLS" in log, log[-2000:]
    finally:
        listener.close()


# ---------------------------------------------------------------- the baton-mysql rotator

class PrivateMariaDB:
    """A private mariadbd on a free port that speaks TLS with the given certificate, and a user
    that must use TLS."""

    def __init__(self, certs):
        self.dir = tempfile.mkdtemp(prefix="baton-mariadb-")
        self.port = free_port()
        self.sock = os.path.join(self.dir, "sock")
        done = subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={self.dir}/data", "--user=root",
                               "--auth-root-authentication-method=normal", "--skip-test-db"],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.process = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={self.dir}/data", "--user=root", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.sock}", "--skip-log-bin",
             f"--ssl-ca={certs['ca']}", f"--ssl-cert={certs['cert']}", f"--ssl-key={certs['key']}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while subprocess.run(["mysql", f"--socket={self.sock}", "-uroot", "-e", "SELECT 1"],
                             capture_output=True).returncode != 0:
            assert self.process.poll() is None and time.time() < deadline, open(self.log.name).read()
            time.sleep(0.1)

    def admin(self, sql):
        done = subprocess.run(["mysql", f"--socket={self.sock}", "-uroot", "-N", "-e", sql],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def create_tls_user(self, user, password):
        self.admin(f"DROP USER IF EXISTS '{user}'@'%'; CREATE USER '{user}'@'%' IDENTIFIED BY '{password}' REQUIRE SSL")

    def login(self, user, password):
        return subprocess.run(["mysql", "-h", "127.0.0.1", "-P", str(self.port), "-u", user, "--ssl", "-e", "SELECT 1"],
                              env=dict(os.environ, MYSQL_PWD=password), capture_output=True).returncode == 0

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_mariadb(cas):
    if not shutil.which("mariadbd") or not shutil.which("mariadb-install-db"):
        pytest.skip("mariadbd is not installed: TLS to MariaDB not tested")
    db = PrivateMariaDB(cas["right"])
    yield db
    db.stop()


def rotate_db_secret(server, sm, name, value, rotator):
    sm.create_secret(Name=name, SecretString=json.dumps(value))
    fast_policy(server, name, MaxAttempts=1)
    return rotate_and_wait(server, sm, name, rotator)


@pytest.mark.parametrize("host,mode,ca,works,reason", [
    ("localhost", "verify-full", "right", True, None),
    ("127.0.0.1", "verify-ca", "right", False, "which the MySQL driver cannot do: use verify-full"),
    ("127.0.0.1", "require", None, True, None),
    ("localhost", "verify-full", "wrong", False, "UnknownIssuer"),
    ("127.0.0.1", "verify-full", "right", False, 'certificate not valid for name "127.0.0.1"'),
], ids=["verify-full", "verify-ca-by-address", "require", "wrong-ca", "wrong-host-name"])
def test_the_mysql_rotator_speaks_tls_in_every_mode(server, sm, unique_name, tls_mariadb, cas, host, mode, ca,
                                                   works, reason):
    user = "tls_app_" + str(abs(hash(unique_name)) % 10**6)
    tls_mariadb.create_tls_user(user, "initial-pass")
    value = {"engine": "mariadb", "host": host, "port": tls_mariadb.port, "username": user,
             "password": "initial-pass", "sslmode": mode}
    if ca:
        value["sslrootcert"] = cas[ca]["ca"]
    r = rotate_db_secret(server, sm, unique_name, value, "baton-mysql")
    if works:
        assert r["Status"] == "Succeeded", r.get("StatusReason")
        new = json.loads(sm.get_secret_value(SecretId=unique_name)["SecretString"])["password"]
        assert tls_mariadb.login(user, new) and not tls_mariadb.login(user, "initial-pass")
    else:
        assert r["Status"] == "Stopped", r
        assert f"sslmode={mode}" in r["StatusReason"] and reason in r["StatusReason"], r
        assert tls_mariadb.login(user, "initial-pass"), "nothing changed"


def test_the_mysql_rotator_with_require_refuses_a_server_without_tls_and_prefer_falls_back(
        server, sm, unique_name, mariadb):
    mariadb.create_user("baton_no_tls", "initial-pass")
    base = {"engine": "mariadb", "host": mariadb.host, "port": mariadb.port, "username": "baton_no_tls",
            "password": "initial-pass"}
    r = rotate_db_secret(server, sm, unique_name, {**base, "sslmode": "require"}, "baton-mysql")
    assert r["Status"] == "Stopped" and "sslmode=require" in r["StatusReason"], r
    assert "does not have this capability" in r["StatusReason"], r
    r = rotate_db_secret(server, sm, unique_name + "-prefer", {**base, "sslmode": "prefer"}, "baton-mysql")
    assert r["Status"] == "Succeeded", r


# ---------------------------------------------------------------- the baton-postgres rotator

@pytest.fixture(scope="module")
def tls_postgres(cas):
    if not os.environ.get("BATON_TEST_POSTGRES_URL"):
        pytest.skip("BATON_TEST_POSTGRES_URL is not set: TLS PostgreSQL rotation not tested")
    if os.geteuid() != 0:
        pytest.skip("a private PostgreSQL cluster needs root: TLS PostgreSQL rotation not tested")
    db = ScramPostgres(tls=cas["right"])
    db.prepare_probe()
    yield db
    db.stop()


@pytest.mark.parametrize("host,ca,works,reason", [
    ("localhost", "right", True, None),
    ("localhost", "wrong", False, "UnknownIssuer"),
    ("127.0.0.1", "right", False, 'certificate not valid for name "127.0.0.1"'),
], ids=["verify-full", "wrong-ca", "wrong-host-name"])
def test_the_postgres_rotator_verifies_the_server(server, sm, unique_name, tls_postgres, cas, host, ca, works, reason):
    user = "tls_pg_" + str(abs(hash(unique_name)) % 10**6)
    tls_postgres.create_user(user, "initial-pass")
    value = {"engine": "postgres", "host": host, "port": tls_postgres.port, "username": user,
             "password": "initial-pass", "dbname": "postgres", "sslmode": "verify-full",
             "sslrootcert": cas[ca]["ca"]}
    r = rotate_db_secret(server, sm, unique_name, value, "baton-postgres")
    if works:
        # The cluster accepts TLS connections only (hostssl), so the rotation's success proves it.
        assert r["Status"] == "Succeeded", r
        new = json.loads(sm.get_secret_value(SecretId=unique_name)["SecretString"])["password"]
        assert tls_postgres.login(user, new) and not tls_postgres.login(user, "initial-pass")
    else:
        assert r["Status"] == "Stopped", r
        assert "sslmode=verify-full" in r["StatusReason"] and reason in r["StatusReason"], r
        assert tls_postgres.login(user, "initial-pass"), "nothing changed"


def test_a_cluster_that_accepts_only_tls_refuses_the_rotator_without_it(server, sm, unique_name, tls_postgres):
    tls_postgres.create_user("tls_pg_plain", "initial-pass")
    value = {"engine": "postgres", "host": "127.0.0.1", "port": tls_postgres.port, "username": "tls_pg_plain",
             "password": "initial-pass", "dbname": "postgres", "sslmode": "disable"}
    r = rotate_db_secret(server, sm, unique_name, value, "baton-postgres")
    assert r["Status"] == "Stopped" and "sslmode=disable" in r["StatusReason"], r
