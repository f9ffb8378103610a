"""Database credentials: the built-in baton-postgres and baton-mysql rotators against the
MariaDB server on this machine and a PostgreSQL cluster that checks passwords.

The machine's PostgreSQL trusts every local connection, so a password could never fail there.
These tests start a private cluster with scram-sha-256 authentication instead (as the postgres
system user, which needs root). MariaDB checks passwords as it is.

Environment: BATON_TEST_MYSQL_URL (mysql://root@127.0.0.1:3306/test) enables MariaDB;
BATON_TEST_POSTGRES_URL enables PostgreSQL. Unset, those tests skip and say so.
"""

import glob
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse

import pytest

import awsraw
from conftest import free_port

# Quotes, a backslash, a semicolon, a comment and non-ASCII: nothing may be injected.
HOSTILE_USER = "ap'p\"\\;--ü"
HOSTILE_PASSWORD = "pa'ss\"\\; DROP USER root; --é☃"


# ---------------------------------------------------------------- database helpers

class MariaDB:
    engine = "mysql"
    rotator = "baton-mysql"

    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port or 3306
        self.admin_user, self.admin_password = urllib.parse.unquote(u.username or "root"), u.password or ""
        self.dbname = u.path.lstrip("/") or "test"

    @staticmethod
    def lit(text):
        return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"

    def admin(self, sql):
        run = subprocess.run(["mysql", "-u", self.admin_user, "-h", self.host, "-P", str(self.port), "-N", "-e", sql],
                             env=dict(os.environ, MYSQL_PWD=self.admin_password), capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        return run.stdout

    def login(self, user, password):
        run = subprocess.run(["mysql", "-u", user, "-h", self.host, "-P", str(self.port), "-N", "-e", "SELECT 1"],
                             env=dict(os.environ, MYSQL_PWD=password), capture_output=True, text=True)
        return run.returncode == 0

    def create_user(self, user, password):
        self.drop_user(user)
        self.admin(f"CREATE USER {self.lit(user)}@'%' IDENTIFIED BY {self.lit(password)}; "
                   f"GRANT SELECT ON `{self.dbname}`.* TO {self.lit(user)}@'%'")

    def drop_user(self, user):
        self.admin(f"DROP USER IF EXISTS {self.lit(user)}@'%'")

    def can_select(self, user, password):
        run = subprocess.run(["mysql", "-u", user, "-h", self.host, "-P", str(self.port), self.dbname, "-N", "-e",
                              "SELECT COUNT(*) FROM baton_probe"],
                             env=dict(os.environ, MYSQL_PWD=password), capture_output=True, text=True)
        return run.returncode == 0

    def prepare_probe(self):
        self.admin(f"CREATE TABLE IF NOT EXISTS `{self.dbname}`.baton_probe (n INT)")

    def hold_session(self, user, password):
        return subprocess.Popen(["mysql", "-u", user, "-h", self.host, "-P", str(self.port), "-N", "-e",
                                 "SELECT SLEEP(600)"], env=dict(os.environ, MYSQL_PWD=password),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def close_sessions(self, user):
        pass  # the server ends a session whose client went away

    def master_value(self):
        return {"engine": "mysql", "host": self.host, "port": self.port, "username": self.admin_user,
                "password": self.admin_password, "dbname": self.dbname}


class ScramPostgres:
    """A private PostgreSQL cluster with scram-sha-256 authentication on a free port."""
    engine = "postgres"
    rotator = "baton-postgres"
    dbname = "postgres"

    def __init__(self, tls=None):
        """With `tls` (paths of a certificate, its key and CA), the cluster accepts TCP
        connections over TLS only."""
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        self.bin = bins[-1]
        self.dir = tempfile.mkdtemp(prefix="baton-pg-")
        shutil.chown(self.dir, "postgres")
        self.host, self.port = "127.0.0.1", free_port()
        self.admin_user, self.admin_password = "postgres", "master-pass-0123456789"
        pwfile = os.path.join(self.dir, "pw")
        with open(pwfile, "w") as f:
            f.write(self.admin_password)
        shutil.chown(pwfile, "postgres")
        self.as_postgres([f"{self.bin}/initdb", "-D", f"{self.dir}/data", "-U", "postgres", "-E", "UTF8",
                          "--auth=scram-sha-256", f"--pwfile={pwfile}"])
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if tls:
            for name in ("cert", "key"):
                shutil.copy(tls[name], os.path.join(self.dir, f"server.{name}"))
                shutil.chown(os.path.join(self.dir, f"server.{name}"), "postgres")
                os.chmod(os.path.join(self.dir, f"server.{name}"), 0o600)
            with open(f"{self.dir}/data/pg_hba.conf", "w") as f:
                f.write("local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n"
                        "hostnossl all all 0.0.0.0/0 reject\n")
            options += f" -c ssl=on -c ssl_cert_file={self.dir}/server.cert -c ssl_key_file={self.dir}/server.key"
        self.as_postgres([f"{self.bin}/pg_ctl", "-D", f"{self.dir}/data", "-l", f"{self.dir}/log", "-w", "-o",
                          options, "start"])

    @staticmethod
    def as_postgres(cmd):
        run = subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr

    def stop(self):
        subprocess.run(["runuser", "-u", "postgres", "--", f"{self.bin}/pg_ctl", "-D", f"{self.dir}/data",
                        "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def ident(name):
        return '"' + name.replace('"', '""') + '"'

    @staticmethod
    def lit(text):
        return "'" + text.replace("'", "''") + "'"

    def psql(self, user, password, sql, db="postgres"):
        return subprocess.run(["psql", "-h", self.host, "-p", str(self.port), "-U", user, "-d", db, "-X", "-q",
                               "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
                              env=dict(os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT="5"),
                              capture_output=True, text=True)

    def admin(self, sql):
        run = self.psql(self.admin_user, self.admin_password, sql)
        assert run.returncode == 0, run.stderr
        return run.stdout

    def login(self, user, password):
        return self.psql(user, password, "SELECT 1").returncode == 0

    def create_user(self, user, password):
        self.drop_user(user)
        self.admin(f"CREATE ROLE {self.ident(user)} LOGIN PASSWORD {self.lit(password)}; "
                   f"GRANT SELECT ON baton_probe TO {self.ident(user)}")

    def drop_user(self, user):
        if self.admin(f"SELECT 1 FROM pg_roles WHERE rolname = {self.lit(user)}").strip():
            self.admin(f"DROP OWNED BY {self.ident(user)}; DROP ROLE {self.ident(user)}")

    def can_select(self, user, password):
        return self.psql(user, password, "SELECT count(*) FROM baton_probe").returncode == 0

    def prepare_probe(self):
        self.admin("CREATE TABLE IF NOT EXISTS baton_probe (n int)")

    def hold_session(self, user, password):
        return subprocess.Popen(["psql", "-h", self.host, "-p", str(self.port), "-U", user, "-d", "postgres",
                                 "-c", "SELECT pg_sleep(600)"], env=dict(os.environ, PGPASSWORD=password),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def close_sessions(self, user):
        # pg_sleep does not notice that its client went away; end the backend as the app would.
        self.admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {self.lit(user)}")

    def master_value(self):
        return {"engine": "postgres", "host": self.host, "port": self.port, "username": self.admin_user,
                "password": self.admin_password, "dbname": "postgres"}


@pytest.fixture(scope="session")
def mariadb():
    url = os.environ.get("BATON_TEST_MYSQL_URL")
    if not url:
        pytest.skip("BATON_TEST_MYSQL_URL is not set: MariaDB rotation tests skipped")
    db = MariaDB(url)
    db.prepare_probe()
    return db


@pytest.fixture(scope="session")
def scram_postgres():
    if not os.environ.get("BATON_TEST_POSTGRES_URL"):
        pytest.skip("BATON_TEST_POSTGRES_URL is not set: PostgreSQL rotation tests skipped")
    if os.geteuid() != 0 or not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        pytest.skip("a private scram PostgreSQL cluster needs root and initdb: PostgreSQL rotation tests skipped")
    db = ScramPostgres()
    db.prepare_probe()
    yield db
    db.stop()


@pytest.fixture(params=["mariadb", "postgres"])
def db(request):
    return request.getfixturevalue("mariadb" if request.param == "mariadb" else "scram_postgres")


# ---------------------------------------------------------------- helpers

def rotate_and_wait(server, sm, name, rotator=None, timeout=60):
    kwargs = {"RotationLambdaARN": f"arn:aws:lambda:us-east-1:{server.account_id}:function:{rotator}"} if rotator else {}
    version = sm.rotate_secret(SecretId=name, **kwargs)["VersionId"]
    deadline = time.time() + timeout
    while True:
        status, r = awsraw.call(server, "baton.DescribeRotation", {"SecretId": name})
        assert status == 200, r
        if r["VersionId"] == version and r["Status"] in ("Succeeded", "Stopped"):
            return r
        assert time.time() < deadline, r
        time.sleep(0.1)


def value_of(server, name):
    status, ring = awsraw.call(server, "baton.GetSecretKeyring", {"SecretId": name})
    assert status == 200, ring
    return json.loads(ring["Current"]["SecretString"])


def fast_policy(server, name, **extra):
    status, body = awsraw.call(server, "baton.PutRotationPolicy", {
        "SecretId": name, "PropagationDelaySeconds": 1, "RetireGraceSeconds": 0, **extra})
    assert status == 200, body


# ---------------------------------------------------------------- tests

@pytest.mark.parametrize("user,password", [("baton_single", "initial-pass"), (HOSTILE_USER, HOSTILE_PASSWORD)],
                         ids=["plain", "hostile"])
def test_single_user_rotation_changes_the_password_in_place(server, sm, unique_name, db, user, password):
    db.create_user(user, password)
    value = {"engine": db.engine, "host": db.host, "port": db.port, "username": user, "password": password,
             "dbname": db.dbname, "note": "kept"}
    sm.create_secret(Name=unique_name, SecretString=json.dumps(value))
    fast_policy(server, unique_name)
    r = rotate_and_wait(server, sm, unique_name, db.rotator)
    assert r["Status"] == "Succeeded", r
    new = value_of(server, unique_name)
    assert new["username"] == user and new["note"] == "kept" and new["password"] != password
    assert not any(c in new["password"] for c in "/@\"'\\"), "AWS's excluded characters"
    assert db.login(user, new["password"]), "the new password works"
    assert not db.login(user, password), "the old one does not"
    # Nothing was injected: the master account still works, and no stray user appeared.
    assert db.login(db.admin_user, db.admin_password)
    # A second rotation logs in with the password the first one set.
    r = rotate_and_wait(server, sm, unique_name)
    assert r["Status"] == "Succeeded", r
    assert db.login(user, value_of(server, unique_name)["password"])
    db.drop_user(user)


@pytest.mark.parametrize("user", ["baton_alt", HOSTILE_USER], ids=["plain", "hostile"])
def test_alternating_users_clone_the_user_take_turns_and_revoke_the_old_one(server, sm, unique_name, db, user):
    clone = user + "_clone"
    db.create_user(user, HOSTILE_PASSWORD)
    db.drop_user(clone)
    master = sm.create_secret(Name=unique_name + "/master", SecretString=json.dumps(db.master_value()))["ARN"]
    # The shape AWS documents for its alternating-users functions.
    value = {"engine": db.engine, "host": db.host, "port": db.port, "username": user, "password": HOSTILE_PASSWORD,
             "dbname": db.dbname, "masterarn": master}
    sm.create_secret(Name=unique_name, SecretString=json.dumps(value))
    fast_policy(server, unique_name)
    r = rotate_and_wait(server, sm, unique_name, db.rotator)
    assert r["Status"] == "Succeeded", r
    first = value_of(server, unique_name)
    assert first["username"] == clone and first["masterarn"] == master
    assert db.login(clone, first["password"])
    assert db.can_select(clone, first["password"]), "the clone has the original's privileges"
    assert not db.login(user, HOSTILE_PASSWORD), "retire revoked the old user's password"
    r = rotate_and_wait(server, sm, unique_name)
    assert r["Status"] == "Succeeded", r
    second = value_of(server, unique_name)
    assert second["username"] == user and db.login(user, second["password"])
    assert db.can_select(user, second["password"])
    assert not db.login(clone, first["password"])
    db.drop_user(clone)
    db.drop_user(user)


def test_retire_waits_while_the_old_user_has_a_session_then_alerts(server, sm, unique_name, db):
    user = "baton_held"
    db.create_user(user, "held-pass-1")
    db.drop_user(user + "_clone")
    master = sm.create_secret(Name=unique_name + "/master", SecretString=json.dumps(db.master_value()))["ARN"]
    sm.create_secret(Name=unique_name, SecretString=json.dumps({
        "engine": db.engine, "host": db.host, "port": db.port, "username": user, "password": "held-pass-1",
        "dbname": db.dbname, "masterarn": master}))
    fast_policy(server, unique_name, MaxGateWaitSeconds=2)
    session = db.hold_session(user, "held-pass-1")
    try:
        time.sleep(1)
        lam = f"arn:aws:lambda:us-east-1:{server.account_id}:function:{db.rotator}"
        sm.rotate_secret(SecretId=unique_name, RotationLambdaARN=lam)
        deadline = time.time() + 30
        while True:
            status, r = awsraw.call(server, "baton.DescribeRotation", {"SecretId": unique_name})
            events = [e["Event"] for e in r.get("Timeline", [])]
            if any(e.startswith("ALERT: step retire held") for e in events):
                break
            assert time.time() < deadline and r["Status"] == "InProgress", r
            time.sleep(0.2)
        assert r["Phase"] == "drained", "promoted and drained, waiting to retire"
        assert any("still has 1 open session" in e for e in events), events
        assert db.login(user, "held-pass-1"), "the old user is not revoked while it has a session"
    finally:
        session.kill()
        session.wait()
        db.close_sessions(user)
    deadline = time.time() + 30
    while (r := awsraw.call(server, "baton.DescribeRotation", {"SecretId": unique_name})[1])["Status"] != "Succeeded":
        assert time.time() < deadline, r
        time.sleep(0.2)
    assert not db.login(user, "held-pass-1")
    db.drop_user(user + "_clone")
    db.drop_user(user)


def test_a_secret_that_is_not_a_database_secret_stops_with_a_clear_reason(server, sm, unique_name, mariadb):
    sm.create_secret(Name=unique_name, SecretString=json.dumps({"engine": "oracle", "host": "h", "username": "u",
                                                                "password": "p"}))
    awsraw.call(server, "baton.PutRotationPolicy", {"SecretId": unique_name, "MaxAttempts": 1})
    r = rotate_and_wait(server, sm, unique_name, "baton-mysql")
    assert r["Status"] == "Stopped" and "engine \"oracle\" is not one Baton rotates" in r["StatusReason"], r
    assert json.loads(sm.get_secret_value(SecretId=unique_name)["SecretString"])["password"] == "p"


# ---------------------------------------------------------------- the master is not a shortcut

def scoped_principal(server, name, *resources, actions="secretsmanager:*"):
    """A service principal allowed `actions` on `resources` only; returns its boto3 client."""
    document = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": actions, "Resource": list(resources)}]})
    for target, body in [("baton.CreatePrincipal", {"Name": name, "Kind": "service"}),
                         ("baton.PutPrincipalPolicy", {"PrincipalName": name, "PolicyName": "p",
                                                       "PolicyDocument": document})]:
        status, out = awsraw.call(server, target, body)
        assert status == 200, out
    status, out = awsraw.call(server, "baton.CreateAccessKey", {"PrincipalName": name})
    assert status == 200, out
    key = out["AccessKey"]
    return server.client(access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"])


def secret_arn_pattern(server, prefix):
    return f"arn:aws:secretsmanager:us-east-1:{server.account_id}:secret:{prefix}*"


def test_a_scoped_principal_cannot_take_over_a_database_superuser_through_the_master(
        server, sm, unique_name, db):
    """The attack of issue 16: a principal limited to team-a/* names the administrator's master
    secret in its own secret, with a user name whose alternate is an existing powerful role."""
    dba = f"dba{abs(hash(unique_name)) % 100000}"
    db.create_user(dba, "dba-pass-only-the-admin-knows")
    db.drop_user(dba + "_clone")
    master = sm.create_secret(Name=f"{unique_name}/infra/pg-master", SecretString=json.dumps(db.master_value()))["ARN"]
    team = scoped_principal(server, f"team-{abs(hash(unique_name)) % 100000}",
                            secret_arn_pattern(server, f"{unique_name}/team-a/"))
    with pytest.raises(team.exceptions.ClientError) as denied:
        team.get_secret_value(SecretId=master)
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
    value = {"engine": db.engine, "host": db.host, "port": db.port, "username": dba + "_clone",
             "password": "whatever-the-attacker-likes", "dbname": db.dbname, "masterarn": master}
    own = f"{unique_name}/team-a/db"
    team.create_secret(Name=own, SecretString=json.dumps(value))
    lam = f"arn:aws:lambda:us-east-1:{server.account_id}:function:{db.rotator}"
    # Configuring the rotation needs the right to read the master it would act as.
    with pytest.raises(team.exceptions.ClientError) as refused:
        team.rotate_secret(SecretId=own, RotationLambdaARN=lam)
    error = refused.value.response["Error"]
    assert error["Code"] == "AccessDeniedException" and master in error["Message"], error
    assert "RotationEnabled" not in sm.describe_secret(SecretId=own) or not sm.describe_secret(SecretId=own)["RotationEnabled"]
    # Even when an administrator starts that rotation, Baton clones only a user whose
    # credentials the secret holds, and never touches a role it did not create.
    fast_policy(server, own, MaxAttempts=1)
    r = rotate_and_wait(server, sm, own, db.rotator)
    assert r["Status"] == "Stopped" and "do not log in" in r["StatusReason"], r
    assert db.login(dba, "dba-pass-only-the-admin-knows"), "the superuser's password is unchanged"
    db.drop_user(dba)


def test_a_role_of_the_clone_name_that_baton_did_not_create_is_never_changed(server, sm, unique_name, db):
    user = f"owner{abs(hash(unique_name)) % 100000}"
    db.create_user(user, "owner-pass-1")
    db.create_user(user + "_clone", "someone-elses-pass")
    master = sm.create_secret(Name=unique_name + "/master", SecretString=json.dumps(db.master_value()))["ARN"]
    sm.create_secret(Name=unique_name, SecretString=json.dumps({
        "engine": db.engine, "host": db.host, "port": db.port, "username": user, "password": "owner-pass-1",
        "dbname": db.dbname, "masterarn": master}))
    fast_policy(server, unique_name, MaxAttempts=1)
    r = rotate_and_wait(server, sm, unique_name, db.rotator)
    assert r["Status"] == "Stopped", r
    assert "exists already and Baton did not create it" in r["StatusReason"], r
    assert db.login(user + "_clone", "someone-elses-pass"), "its password is unchanged"
    assert db.login(user, "owner-pass-1")
    db.drop_user(user + "_clone")
    db.drop_user(user)


def test_a_rotation_stops_when_its_configurer_may_no_longer_read_the_master(server, sm, unique_name, db):
    user = f"ops{abs(hash(unique_name)) % 100000}"
    db.create_user(user, "ops-pass-1")
    db.drop_user(user + "_clone")
    master = sm.create_secret(Name=unique_name + "/master", SecretString=json.dumps(db.master_value()))["ARN"]
    principal = f"rotator-{abs(hash(unique_name)) % 100000}"
    ops = scoped_principal(server, principal, secret_arn_pattern(server, unique_name))
    own = f"{unique_name}/app"
    ops.create_secret(Name=own, SecretString=json.dumps({
        "engine": db.engine, "host": db.host, "port": db.port, "username": user, "password": "ops-pass-1",
        "dbname": db.dbname, "masterarn": master}))
    # Long enough to take the right away between promotion and retirement.
    fast_policy(server, own, MaxAttempts=1, RetireGraceSeconds=4)
    lam = f"arn:aws:lambda:us-east-1:{server.account_id}:function:{db.rotator}"
    ops.rotate_secret(SecretId=own, RotationLambdaARN=lam)
    deadline = time.time() + 60
    while awsraw.call(server, "baton.DescribeRotation", {"SecretId": own})[1]["Phase"] not in ("promoted", "drained"):
        assert time.time() < deadline
        time.sleep(0.1)
    status, out = awsraw.call(server, "baton.DeletePrincipalPolicy", {"PrincipalName": principal, "PolicyName": "p"})
    assert status == 200, out
    while (r := awsraw.call(server, "baton.DescribeRotation", {"SecretId": own})[1])["Status"] == "InProgress":
        assert time.time() < deadline, r
        time.sleep(0.2)
    assert r["Status"] == "Stopped" and principal in r["StatusReason"] and master in r["StatusReason"], r
    assert db.login(user, "ops-pass-1"), "the old user was not revoked by a master nobody may read"
    # The denied read of the master is in the audit log, among its most recent entries.
    status, audit = awsraw.call(server, "baton.ListAuditEntries", {
        "AfterSeq": -1000, "MaxResults": 1000, "Action": "secretsmanager:GetSecretValue", "Resource": master,
        "Decision": "deny"})
    assert status == 200, audit
    assert any(principal in e["Principal"] for e in audit["Entries"]), audit
    db.drop_user(user + "_clone")
    db.drop_user(user)


# ---------------------------------------------------------------- load

def run_load(server, sm, db, name, strategy, rotations, clients=4, interval_ms=10):
    """Clients open a new connection per request with the credentials their keyring cache holds
    now, while the secret rotates `rotations` times. Returns the clients' counters and each
    rotation's duration."""
    from test_examples import BIN, read_stats
    from conftest import ACCESS_KEY_ID, SECRET_ACCESS_KEY
    import signal

    user = f"baton_load_{strategy}"
    db.create_user(user, "load-initial-pass")
    db.drop_user(user + "_clone")
    value = {"engine": db.engine, "host": db.host, "port": db.port, "username": user,
             "password": "load-initial-pass", "dbname": db.dbname}
    if strategy == "alternating":
        value["masterarn"] = sm.create_secret(Name=name + "/master",
                                              SecretString=json.dumps(db.master_value()))["ARN"]
    sm.create_secret(Name=name, SecretString=json.dumps(value))
    status, body = awsraw.call(server, "baton.PutRotationPolicy", {
        "SecretId": name, "PropagationDelaySeconds": 300, "MaxGateWaitSeconds": 300, "RetireGraceSeconds": 1})
    assert status == 200, body
    env = dict(os.environ, AWS_ENDPOINT_URL=server.endpoint, AWS_REGION="us-east-1",
               AWS_ACCESS_KEY_ID=ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY)
    stats_dir = tempfile.mkdtemp(prefix="baton-dbload-")
    procs, paths = [], []
    durations = []
    try:
        for i in range(clients):
            path = os.path.join(stats_dir, f"client-{i}.json")
            paths.append(path)
            procs.append(subprocess.Popen(
                [str(BIN / "db-client"), "--secret", name, "--interval-ms", str(interval_ms), "--stats", path],
                env=dict(env, INSTANCE_ID=f"db-client-{i}"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.5)
        for n in range(rotations):
            started = time.time()
            r = rotate_and_wait(server, sm, name, db.rotator if n == 0 else None, timeout=120)
            assert r["Status"] == "Succeeded", r
            durations.append(time.time() - started)
        time.sleep(1)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=15)
    from pathlib import Path
    results = [read_stats(Path(p)) for p in paths]
    db.drop_user(user + "_clone")
    db.drop_user(user)
    return results, durations


@pytest.mark.parametrize("engine_name", ["mariadb", "postgres"])
def test_alternating_users_rotate_20_times_without_one_failed_connection(fresh, unique_name, engine_name,
                                                                         request):
    # The load runs once per database, on a server of its own on the embedded store: the
    # store plays no part in it.
    server = fresh().start()
    db = request.getfixturevalue("mariadb" if engine_name == "mariadb" else "scram_postgres")
    results, durations = run_load(server, server.client(), db, unique_name, "alternating", rotations=20)
    print(f"\n{engine_name}: {results}; rotation seconds {[round(d, 2) for d in durations]}")
    connected = sum(r["connected"] for r in results)
    assert connected > 200, "connections were opened throughout"
    assert all(r["failed"] == 0 for r in results), results


# ---------------------------------------------------------------- AWS's alternating-users function

def test_aws_alternating_users_function_needs_and_uses_its_execution_policy(server, sm, scram_postgres,
                                                                             unique_name):
    """AWS's PostgreSQL alternating-users function, in the shape AWS publishes it, runs through
    the engine as a command rotator. It reads the master secret its `masterarn` names, which only
    the rotator's execution policy allows (as a Lambda's role does): without one its setSecret
    step is denied and says so; with one, two rotations complete, each switching users."""
    import random
    import sys
    from pathlib import Path

    db = scram_postgres
    here = Path(__file__).parent
    master = sm.create_secret(Name=unique_name + "/master", SecretString=json.dumps(db.master_value()))["ARN"]
    code = (f"import json, sys; sys.path.insert(0, '{here}'); import pg_alternating_users as f; "
            f"f.lambda_handler(json.load(sys.stdin), None)")
    suffix = unique_name.rsplit("-", 1)[-1]
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": master}]}
    bare = server.add_command_rotator(f"pg-multi-bare-{suffix}", [sys.executable, "-c", code], timeout_seconds=60)
    with_role = server.add_command_rotator(f"pg-multi-{suffix}", [sys.executable, "-c", code],
                                           timeout_seconds=60, policy=policy)
    listed = {r["Name"]: r for r in awsraw.call(server, "baton.ListRotators", {})[1]["Rotators"]}
    assert json.loads(listed[f"pg-multi-{suffix}"]["PolicyDocument"]) == policy
    assert "PolicyDocument" not in listed[f"pg-multi-bare-{suffix}"]

    def app_secret(name):
        user = f"multi_{random.randrange(1 << 30)}"
        db.create_user(user, "initial-pass-0123")
        sm.create_secret(Name=name, SecretString=json.dumps({
            "engine": "postgres", "host": db.host, "port": db.port, "username": user,
            "password": "initial-pass-0123", "dbname": db.dbname, "masterarn": master}))
        fast_policy(server, name, MaxAttempts=1)
        return user

    # Without an execution policy the temporary key may touch only the rotated secret.
    denied_name = unique_name + "/denied"
    app_secret(denied_name)
    r = rotate_and_wait(server, sm, denied_name, rotator=bare.rsplit(":", 1)[-1])
    assert r["Status"] == "Stopped", r
    assert "AccessDeniedException" in r["StatusReason"] and "setSecret" in r["StatusReason"], r
    assert "no session policy allows the secretsmanager:GetSecretValue action" in r["StatusReason"], r

    user = app_secret(unique_name)
    first = rotate_and_wait(server, sm, unique_name, rotator=with_role.rsplit(":", 1)[-1])
    assert first["Status"] == "Succeeded", first
    one = value_of(server, unique_name)
    assert one["username"] == user + "_clone" and one["masterarn"] == master
    assert db.login(one["username"], one["password"]) and db.can_select(one["username"], one["password"]), \
        "the clone has the user's rights"
    assert db.login(user, "initial-pass-0123"), "the previous user keeps working"
    second = rotate_and_wait(server, sm, unique_name)
    assert second["Status"] == "Succeeded", second
    two = value_of(server, unique_name)
    assert two["username"] == user and two["password"] not in ("initial-pass-0123", one["password"])
    assert db.login(user, two["password"]) and db.login(one["username"], one["password"])
