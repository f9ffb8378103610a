"""The root key rotated online: on one node with its root key file (the file becomes a key ring,
then loses the old key), with a key source Baton cannot write (a command), and on three
PostgreSQL nodes under read and write load, with a node that lacks the new key holding the gate
and the driving node SIGKILLed in the middle of the re-wrap. Afterwards every secret, KMS key
and access key still works, the audit chain verifies, nothing in the database is sealed under
the old key, and the old key alone cannot start a node."""

import json
import os
import random
import shutil
import sqlite3
import subprocess
import threading
import time

import pytest

import awsraw
from conftest import ACCESS_KEY_ID, SECRET_ACCESS_KEY, BatonServer, psql
from test_backup import dump, populate
from test_cli import baton


def status(srv):
    return json.loads(baton(srv, "admin", "root-key", "status", "--output", "json").stdout)


def wait_for(srv, predicate, what, timeout=60, interval=0.05):
    deadline = time.time() + timeout
    while True:
        s = status(srv)
        if predicate(s):
            return s
        assert time.time() < deadline, f"{what}: {s}"
        time.sleep(interval)


class Load(threading.Thread):
    """Reads and writes through the given nodes as fast as one thread can, counting every failed
    request. A node is taken out of `targets` before it is killed on purpose."""

    def __init__(self, nodes, names, writes=True):
        super().__init__(daemon=True)
        self.targets = list(nodes)
        self.clients = {id(n): n.client() for n in nodes}
        self.names = names
        self.writes = writes
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.requests = 0
        self.errors = []
        self.written = {}

    def run(self):
        n = 0
        rng = random.Random(7)
        while not self.stop_event.is_set():
            n += 1
            with self.lock:
                node = rng.choice(self.targets)
            sm = self.clients[id(node)]
            name = rng.choice(self.names)
            try:
                if self.writes and n % 5 == 0:
                    value = f"written-{n}"
                    sm.put_secret_value(SecretId=name, SecretString=value)
                    self.written[name] = value
                else:
                    sm.get_secret_value(SecretId=name)
                self.requests += 1
            except Exception as e:  # noqa: BLE001 (counted and reported by the test)
                self.errors.append(f"{node.port}: {e!r}")

    def remove(self, node):
        with self.lock:
            self.targets = [t for t in self.targets if t is not node]

    def stop(self):
        self.stop_event.set()
        self.join(timeout=30)


def make_load_secrets(srv, prefix, count):
    sm = srv.client()
    names = [f"{prefix}/{i}" for i in range(count)]
    for name in names:
        sm.create_secret(Name=name, SecretString=f"initial-{name}")
    return names


def sqlite_headers(db):
    """The first nine bytes (format and key id) of every root-sealed blob in an SQLite store."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = []
        for table, column, where in [("secrets", "wrapped_data_key", "substr(wrapped_data_key, 1, 5) != CAST('BTNK1' AS BLOB)"),
                                     ("access_keys", "sealed_secret", "1"),
                                     ("subscriptions", "sealed_signing_secret", "1"),
                                     ("rotators", "sealed_signing_secret", "sealed_signing_secret IS NOT NULL"),
                                     ("baton_meta", "value", "name LIKE 'sealed/%'")]:
            rows += [(table, bytes(r[0])[:9]) for r in conn.execute(f"SELECT {column} FROM {table} WHERE {where}")]
        return rows
    finally:
        conn.close()


def expected_header(key):
    return b"\x02" + bytes.fromhex(key.removeprefix("rk-"))


def check_everything_works(srv, before, facts):
    after = dump(srv)
    for d in (before, after):
        for name in list(d["secrets"]):
            if name == "rotating" or name.startswith("load/"):
                del d["secrets"][name]
    assert after == before
    kms = srv.client("kms")
    assert kms.decrypt(CiphertextBlob=facts["ciphertext"])["Plaintext"] == b"kms plaintext"
    reader = srv.client(access_key=facts["reader"]["AccessKeyId"], secret_key=facts["reader"]["SecretAccessKey"])
    assert reader.get_secret_value(SecretId="app/1")["SecretString"] == before["secrets"]["app/1"]["versions"][
        next(v for v, s in before["secrets"]["app/1"]["stages"].items() if "AWSCURRENT" in s)]
    out = baton(srv, "audit", "verify")
    assert "the audit chain is intact" in out.stdout, out.stdout + out.stderr


def test_one_node_rotates_its_root_key_file_under_load_and_the_old_key_opens_nothing(fresh):
    # One sealed value per re-wrap transaction, so that the re-wrap lasts long enough to watch.
    srv = fresh(extra_args=["--root-key-rewrap-batch", "1"])
    srv.start()
    facts = populate(srv)
    for i in range(150):
        srv.client().create_secret(Name=f"bulk/{i}", SecretString=f"bulk-{i}")
    # A subscription's signing secret is sealed under the root key too.
    status_code, out = awsraw.call(srv, "baton.CreateSubscription", {"Url": "http://127.0.0.1:9/hook"})
    assert status_code == 200, out
    names = make_load_secrets(srv, "load", 8)
    before = dump(srv)
    old_file = (srv.data_dir / "root.key").read_text()
    old_key = status(srv)["PrimaryKey"]
    assert status(srv)["Phase"] == "None"
    # Rotating or reading the root key's state takes baton:RotateRootKey / baton:DescribeRootKey.
    reader = facts["reader"]
    for target in ("baton.RotateRootKey", "baton.DescribeRootKey"):
        code, out = awsraw.call(srv, target, {}, access_key=reader["AccessKeyId"], secret_key=reader["SecretAccessKey"])
        assert code == 400 and out["__type"] == "AccessDeniedException", (target, code, out)
        assert f"baton:{target.split('.')[1]}" in (out.get("Message") or out.get("message")), out

    load = Load([srv], names)
    load.start()
    time.sleep(0.5)
    out = baton(srv, "admin", "root-key", "rotate", "--wait", "--wait-seconds", "120", "--output", "json")
    time.sleep(0.5)
    load.stop()
    done = json.loads(out.stdout)
    assert load.errors == [], load.errors[:5]
    assert load.requests > 50, load.requests
    new_key = done["NewKey"]
    assert done["Phase"] == "Retired" and done["PrimaryKey"] == new_key != old_key
    assert done["KeysLive"] == [new_key] and done["RetiredKeys"] == [old_key]
    assert done["RemainingCount"] == 0 and done["RewrappedCount"] >= 180, done
    # The progress was shown while it ran.
    # (The re-wrap's "Promoted: re-wrapped N, M left" lines appear when a poll lands in it.)
    for phase in ("Added:", "Retired"):
        assert phase in out.stderr, out.stderr

    # The file was a key ring for the rotation and holds only the new key now.
    lines = [line for line in (srv.data_dir / "root.key").read_text().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0] not in old_file
    assert oct((srv.data_dir / "root.key").stat().st_mode & 0o777) == "0o600"
    check_everything_works(srv, before, facts)
    metrics = srv.metrics()
    assert 'baton_root_key_rotation_phase{phase="Retired"} 1' in metrics, metrics
    assert "baton_root_key_remaining 0" in metrics
    srv.stop()

    headers = sqlite_headers(srv.data_dir / "baton.db")
    assert len(headers) >= 180
    assert {h for _, h in headers} == {expected_header(new_key)}, [t for t, h in headers if h != expected_header(new_key)]

    # The old key alone starts no node: it opens nothing the database holds.
    (srv.data_dir / "root.key").write_text(old_file)
    (srv.data_dir / "root.key").chmod(0o600)
    srv.start(wait=False)
    assert srv.process.wait(timeout=30) != 0
    log = srv.read_log()
    assert f"the deployment's root key is {new_key}" in log and "does not hold it" in log, log[-1500:]
    (srv.data_dir / "root.key").write_text(lines[0] + "\n")
    srv.start()
    assert srv.client().get_secret_value(SecretId="app/binary")["SecretBinary"] == b"\x00\x01\xff binary-sealed-7f3"
    # A second rotation right after the first works the same way.
    again = json.loads(baton(srv, "admin", "root-key", "rotate", "--wait", "--output", "json").stdout)
    assert again["Phase"] == "Retired" and again["RetiredKeys"] == [old_key, new_key]


def test_a_command_source_rotates_with_a_key_the_operator_adds(fresh, tmp_path):
    key_file = tmp_path / "keys" / "ring"
    key_file.parent.mkdir()
    key_file.write_text(f"baton-root-key-v1 {os.urandom(32).hex()}\n")
    srv = fresh(extra_args=["--root-key-command", f"cat {key_file}"])
    srv.start()
    sm = srv.client()
    sm.create_secret(Name="cmd/one", SecretString="under-a-command-ring")
    refused = baton(srv, "admin", "root-key", "rotate", check=False)
    assert refused.returncode != 0
    assert "baton admin root-key generate" in refused.stderr and "cannot write" in refused.stderr, refused.stderr
    assert status(srv)["Phase"] == "None", "a refused rotation changes nothing"

    made = baton(srv, "admin", "root-key", "generate", "--output-file", str(tmp_path / "new.key"))
    new_key = made.stdout.strip()
    assert new_key.startswith("rk-") and "rotate --key-id" in made.stderr
    assert oct((tmp_path / "new.key").stat().st_mode & 0o777) == "0o600"
    assert new_key not in (tmp_path / "new.key").read_text(), "the file holds the key, the id is derived"
    # A key no node holds is refused, naming the key source.
    missing = baton(srv, "admin", "root-key", "rotate", "--key-id", new_key, check=False)
    assert missing.returncode != 0 and "does not hold" in missing.stderr and "command `cat" in missing.stderr, missing.stderr
    with open(key_file, "a") as f:
        f.write((tmp_path / "new.key").read_text())
    done = json.loads(baton(srv, "admin", "root-key", "rotate", "--key-id", new_key, "--wait", "--output", "json").stdout)
    assert done["Phase"] == "Retired" and done["PrimaryKey"] == new_key
    assert sm.get_secret_value(SecretId="cmd/one")["SecretString"] == "under-a-command-ring"
    # The command still prints the retired key: the node drops it after a restart too.
    srv.stop()
    srv.start()
    assert srv.client().get_secret_value(SecretId="cmd/one")["SecretString"] == "under-a-command-ring"
    node = status(srv)["Nodes"]
    mine = [n for n in node if n["Live"]]
    assert mine and all(n["KeysHeld"] == [new_key] for n in mine), node
    # A malformed request is refused with a clear error.
    bad = baton(srv, "admin", "root-key", "rotate", "--key-id", "not-a-key", check=False)
    assert bad.returncode != 0 and "is not a root key id" in bad.stderr, bad.stderr


class Cluster:
    """Three nodes on one PostgreSQL database, each with a root key file of its own (copies of
    the first node's), as an operator deploys them."""

    def __init__(self, tmp_path, url, rewrap_batch):
        self.url = url
        self.account = "".join(random.choice("0123456789") for _ in range(12))
        self.nodes = []
        for i in range(3):
            data = tmp_path / f"n{i}" / "data"
            data.parent.mkdir(parents=True)
            extra = ["--node-id", f"node-{i}", "--root-key-rewrap-batch", str(rewrap_batch),
                     "--lease-seconds", "2"]
            if i:
                key = tmp_path / f"n{i}" / "root.key"
                shutil.copy(tmp_path / "n0" / "data" / "root.key", key)
                key.chmod(0o600)
                extra += ["--root-key-file", str(key)]
            node = BatonServer(data_dir=data, engine="postgres", database_url=url, account_id=self.account,
                               extra_args=extra)
            node.start()
            self.nodes.append(node)

    def key_file(self, i):
        return self.nodes[i].data_dir / "root.key" if i == 0 else self.nodes[i].data_dir.parent / "root.key"

    def sql(self, query):
        out = subprocess.run(["psql", self.url, "-At", "-F", "|", "-c", query], capture_output=True, text=True,
                             check=True)
        return [line.split("|") for line in out.stdout.splitlines() if line]

    def stop(self):
        for node in self.nodes:
            node.stop()


@pytest.fixture
def cluster(tmp_path):
    url = os.environ.get("BATON_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("SKIPPED: BATON_TEST_POSTGRES_URL is not set; the three-node rotation needs PostgreSQL")
    name = f"baton_rootkey_{os.getpid()}_{random.randrange(1 << 30)}"
    psql(url, f"CREATE DATABASE {name}")
    base, _, _ = url.rpartition("/")
    c = Cluster(tmp_path, f"{base}/{name}", rewrap_batch=4)
    yield c
    c.stop()
    psql(url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_three_postgres_nodes_rotate_the_root_key_under_load_through_a_node_kill(cluster, tmp_path):
    n0, n1, n2 = cluster.nodes
    facts = populate(n0)
    names = make_load_secrets(n0, "load", 12)
    sm = n0.client()

    def create(i):
        sm.create_secret(Name=f"bulk/{i}", SecretString=f"bulk-{i}")
    threads = [threading.Thread(target=lambda k=k: [create(i) for i in range(k, 600, 6)]) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    before = dump(n0)
    old_key = status(n0)["PrimaryKey"]

    load = Load(cluster.nodes, names)
    load.start()
    started = json.loads(baton(n0, "admin", "root-key", "rotate", "--output", "json").stdout)
    new_key = started["NewKey"]
    # Node 0 wrote the new key beside the old one; nodes 1 and 2 were not given it: they hold the
    # gate, and the status names them.
    held = wait_for(n0, lambda s: "node-1" in (s.get("WaitingFor") or "") and "node-2" in s["WaitingFor"],
                    "the gate names the nodes without the key", timeout=20)
    assert held["Phase"] == "Added" and "do not hold" in held["WaitingFor"], held
    time.sleep(3)
    assert status(n1)["Phase"] == "Added", "no promotion while a live node lacks the key"
    # The operator adds the key to nodes 1 and 2 (their files become the same ring).
    for i in (1, 2):
        shutil.copy(cluster.key_file(0), cluster.key_file(i))
        cluster.key_file(i).chmod(0o600)
    # What the operator copied (old key, then new): a node removes the retired key from its own
    # file once it sees the rotation retired, which a restarted node does at once.
    copied_ring = cluster.key_file(0).read_text()
    promoted = wait_for(n1, lambda s: s["Phase"] == "Promoted" and s["RewrappedCount"] > 0,
                        "the re-wrap starts", timeout=30, interval=0.02)
    assert promoted["RemainingCount"] > 0, promoted
    # SIGKILL the node that drives the re-wrap, in the middle of it.
    holder = cluster.sql("SELECT holder FROM rotation_leases WHERE lease_key = 'root-key-rotation'")[0][0]
    victim = cluster.nodes[int(holder.split("-")[1])]
    load.remove(victim)
    time.sleep(0.2)
    victim.process.kill()
    victim.process.wait()
    survivor = next(n for n in cluster.nodes if n is not victim)
    mid = status(survivor)
    assert mid["Phase"] == "Promoted" and mid["RemainingCount"] > 0, f"the kill came too late: {mid}"
    # Another node takes the rotation up where it stood, and it completes.
    done = wait_for(survivor, lambda s: s["Phase"] == "Retired", "the rotation completes", timeout=120, interval=0.2)
    victim.start()
    time.sleep(1)
    load.stop()
    assert load.errors == [], load.errors[:5]
    assert load.requests > 100, load.requests
    assert done["PrimaryKey"] == new_key and done["RetiredKeys"] == [old_key] and done["RemainingCount"] == 0

    # Nothing in the database is sealed under the old key.
    head = expected_header(new_key).hex()
    for table, column, where in [("secrets", "wrapped_data_key", "substring(wrapped_data_key from 1 for 5) <> 'BTNK1'::bytea"),
                                 ("access_keys", "sealed_secret", "true"),
                                 ("baton_meta", "value", "name LIKE 'sealed/%'")]:
        rows = cluster.sql(f"SELECT count(*), count(*) FILTER (WHERE encode(substring({column} from 1 for 9), 'hex') "
                           f"<> '{head}') FROM {table} WHERE {where}")
        total, stale = map(int, rows[0])
        assert total > 0 and stale == 0, (table, total, stale)
    for node in cluster.nodes:
        check_everything_works(node, json.loads(json.dumps(before, default=str)), facts)
        for name, value in load.written.items():
            assert node.client().get_secret_value(SecretId=name)["SecretString"] == value

    # A node with only the old key refuses to start, and says which key it lacks.
    old_only = tmp_path / "old.key"
    lines = [ln for ln in copied_ring.splitlines() if ln.strip()]
    assert len(lines) == 2, "the copied ring holds the old key and the new one"
    old_only.write_text(lines[0] + "\n")
    old_only.chmod(0o600)
    stray = BatonServer(data_dir=tmp_path / "stray" / "data", engine="postgres", database_url=cluster.url,
                        account_id=cluster.account, extra_args=["--root-key-file", str(old_only)])
    stray.data_dir.parent.mkdir(parents=True)
    stray.start(wait=False)
    assert stray.process.wait(timeout=30) != 0
    log = stray.read_log()
    assert f"the deployment's root key is {new_key}" in log, log[-1500:]


def test_kms_wrapped_nodes_fetch_the_new_root_key_kms_generated(fresh, tmp_path):
    """Two PostgreSQL nodes whose root key is kept only wrapped by a KMS key of another Baton: the
    node that starts the rotation asks KMS for the new key and shares it wrapped through the
    store; the other node fetches and unwraps it, and both restart on the new key."""
    url = os.environ.get("BATON_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("SKIPPED: BATON_TEST_POSTGRES_URL is not set; the two KMS nodes share PostgreSQL")
    kms_server = fresh()
    kms_server.start()
    kms = kms_server.client("kms")
    arn = kms.create_key(Description="wraps the nodes' root keys")["KeyMetadata"]["Arn"]
    env = {"AWS_ENDPOINT_URL_KMS": kms_server.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
           "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY}
    name = f"baton_rootkms_{os.getpid()}_{random.randrange(1 << 30)}"
    psql(url, f"CREATE DATABASE {name}")
    base, _, _ = url.rpartition("/")
    db = f"{base}/{name}"
    nodes = []
    try:
        account = "".join(random.choice("0123456789") for _ in range(12))
        for i in range(2):
            data = tmp_path / f"k{i}" / "data"
            data.mkdir(parents=True)
            if i:
                shutil.copy(nodes[0].data_dir / "root.key.kms", data / "root.key.kms")
            node = BatonServer(data_dir=data, engine="postgres", database_url=db, account_id=account,
                               extra_args=["--root-key-kms", arn, "--node-id", f"kms-{i}"], extra_env=env)
            node.start()
            nodes.append(node)
        nodes[0].client().create_secret(Name="kms/one", SecretString="under-a-kms-ring")
        old_key = status(nodes[0])["PrimaryKey"]
        done = json.loads(baton(nodes[0], "admin", "root-key", "rotate", "--wait", "--output", "json").stdout)
        assert done["Phase"] == "Retired" and done["RetiredKeys"] == [old_key], done
        assert all(n["KeysHeld"][-1] == done["PrimaryKey"] for n in done["Nodes"] if n["Live"]), done["Nodes"]
        for node in nodes:
            node.stop()
            node.start()
            assert node.client().get_secret_value(SecretId="kms/one")["SecretString"] == "under-a-kms-ring"
        assert not any((n.data_dir / "root.key").exists() for n in nodes), "no plain key on disk"
        # Without KMS the new key cannot be unwrapped: the node refuses to start.
        nodes[1].stop()
        kms.disable_key(KeyId=arn)
        nodes[1].start(wait=False)
        assert nodes[1].process.wait(timeout=30) != 0
        assert "DisabledException" in nodes[1].read_log()[-3000:]
        kms.enable_key(KeyId=arn)
    finally:
        for node in nodes:
            node.stop()
        psql(url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
