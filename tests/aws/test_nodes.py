"""Three `baton serve` processes on one PostgreSQL database: rotations survive the loss of the
node driving them (SIGKILL), a node paused past its lease (SIGSTOP) writes nothing stale when it
wakes, watchers on one node hear of changes made on another, and a read after a write returns
that write on any node. A randomized run repeats rotations under random kills and pauses
(`BATON_NODES_ROUNDS`, default 5; `BATON_NODES_SEED` replays a run)."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

import awsraw
from conftest import BatonServer, psql

HERE = Path(__file__).parent
LEASE_SECONDS = 2
SLOW_STEP_SECONDS = 3


class Cluster:
    def __init__(self, tmp_path, url):
        self.url = url
        self.account = "".join(random.choice("0123456789") for _ in range(12))
        self.nodes = []
        for i in range(3):
            extra = ["--lease-seconds", str(LEASE_SECONDS), "--node-id", f"node-{i}"]
            if i:
                extra += ["--root-key-file", str(tmp_path / "n0" / "data" / "root.key")]
            # Every node reads the same operator-defined command rotators.
            node = BatonServer(data_dir=tmp_path / f"n{i}" / "data", engine="postgres", database_url=url,
                               account_id=self.account, extra_args=extra, rotators_dir=tmp_path / "rotators")
            node.data_dir.parent.mkdir(parents=True, exist_ok=True)
            node.start()  # the first creates the root key and the administrator; the rest join
            self.nodes.append(node)
        self.paused = set()

    def node(self, node_id):
        return self.nodes[int(node_id.split("-")[1])]

    def sql(self, query):
        out = subprocess.run(["psql", self.url, "-At", "-F", "|", "-c", query], capture_output=True,
                             text=True, check=True)
        return [line.split("|") for line in out.stdout.splitlines() if line]

    def lease(self, arn):
        """(holder, token, live) of the secret's lease, or None."""
        rows = self.sql("SELECT holder, token, expires_at > (extract(epoch from clock_timestamp()) * 1000)::bigint "
                        f"FROM rotation_leases WHERE lease_key = '{arn}'")
        return (rows[0][0], int(rows[0][1]), rows[0][2] == "t") if rows else None

    def wait_for_live_lease(self, arn, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            lease = self.lease(arn)
            if lease and lease[2]:
                return lease
            time.sleep(0.05)
        raise AssertionError(f"nobody took the lease of {arn}")

    def live(self):
        return [n for n in self.nodes if n.process.poll() is None and not self.is_paused(n)]

    def is_paused(self, node):
        return id(node) in self.paused

    def pause(self, node):
        node.process.send_signal(signal.SIGSTOP)
        self.paused.add(id(node))

    def resume(self, node):
        node.process.send_signal(signal.SIGCONT)
        self.paused.discard(id(node))

    def kill(self, node):
        node.process.send_signal(signal.SIGKILL)
        node.process.wait()

    def restart(self, node):
        node.start()

    def stop(self):
        for node in self.nodes:
            if self.is_paused(node):
                self.resume(node)
            node.stop()


@pytest.fixture
def cluster(tmp_path):
    url = os.environ.get("BATON_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("SKIPPED: BATON_TEST_POSTGRES_URL is not set; the three-node tests need PostgreSQL")
    name = f"baton_nodes_{os.getpid()}_{random.randrange(1 << 30)}"
    psql(url, f"CREATE DATABASE {name}")
    base, _, _ = url.rpartition("/")
    c = Cluster(tmp_path, f"{base}/{name}")
    yield c
    c.stop()
    psql(url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def slow_rotator(cluster, name):
    """A command rotator running AWS's template function, whose createSecret step takes a few
    seconds: long enough to lose its node in the middle of it."""
    code = (
        f"import json, sys, time; sys.path.insert(0, '{HERE}'); "
        f"import rotation_function as f; e = json.load(sys.stdin); "
        f"time.sleep({SLOW_STEP_SECONDS} if e['Step'] == 'createSecret' else 0); f.lambda_handler(e, None)"
    )
    return cluster.nodes[0].add_command_rotator(name, [sys.executable, "-c", code], timeout_seconds=30)


def new_secret(cluster, name, lam):
    sm = cluster.nodes[0].client()
    arn = sm.create_secret(Name=name, SecretString="initial-value-0")["ARN"]
    status, out = awsraw.call(cluster.nodes[0], "baton.PutRotationPolicy",
                              {"SecretId": arn, "PropagationDelaySeconds": 1, "RetireGraceSeconds": 0})
    assert status == 200, out
    return arn


def describe(cluster, arn):
    for node in cluster.live():
        status, out = awsraw.call(node, "baton.DescribeRotation", {"SecretId": arn})
        if status == 200:
            return out
    raise AssertionError("no live node answered")


def wait_succeeded(cluster, arn, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = describe(cluster, arn)
        if r.get("Status") in ("Succeeded", "Stopped"):
            assert r["Status"] == "Succeeded", r
            return r
        time.sleep(0.2)
    raise AssertionError(f"the rotation did not finish: {describe(cluster, arn)}")


def check_invariants(cluster, arn, new_version, old_version):
    sm = cluster.live()[0].client()
    stages = sm.describe_secret(SecretId=arn)["VersionIdsToStages"]
    current = [v for v, labels in stages.items() if "AWSCURRENT" in labels]
    assert current == [new_version], stages
    assert stages == {new_version: ["AWSCURRENT"]}, stages  # the old version was retired
    assert sm.get_secret_value(SecretId=arn, VersionId=old_version)["SecretString"]  # and kept
    value = sm.get_secret_value(SecretId=arn)
    assert value["VersionId"] == new_version and len(value["SecretString"]) == 32
    r = describe(cluster, arn)
    events = [e["Event"] for e in r["Timeline"]]
    for once in ["phase promoted", "phase retired", "rotation succeeded"]:
        assert sum(e == once for e in events) <= 1, (once, events)
    assert events.count("phase promoted") == 1, events


def start_rotation(cluster, arn, lam, node=None):
    sm = (node or random.choice(cluster.live())).client()
    return sm.rotate_secret(SecretId=arn, RotationLambdaARN=lam)["VersionId"]


def rotation_inside_its_slow_step(cluster, name):
    """Starts a rotation through the slow rotator and returns once the node driving it is
    0.5 s into its createSecret step: (arn, new version, old version, lease holder, token)."""
    lam = slow_rotator(cluster, f"slow-{name}")
    arn = new_secret(cluster, f"rotated/{name}", lam)
    stages = cluster.nodes[0].client().describe_secret(SecretId=arn)["VersionIdsToStages"]
    old_version = next(v for v, labels in stages.items() if "AWSCURRENT" in labels)
    new = start_rotation(cluster, arn, lam)
    holder, token, _ = cluster.wait_for_live_lease(arn)
    time.sleep(0.5)
    return arn, new, old_version, holder, token


def test_every_node_is_ready_and_reads_its_own_and_others_writes(cluster):
    for node in cluster.nodes:
        with urllib.request.urlopen(f"{node.endpoint}/ready", timeout=5) as r:
            body = json.loads(r.read())
        assert r.status == 200 and body["status"] == "ready", body
    a, b, c = (n.client() for n in cluster.nodes)
    a.create_secret(Name="raw/one", SecretString="v0")
    for i in range(20):
        writer, reader = random.sample([a, b, c], 2)
        version = writer.put_secret_value(SecretId="raw/one", SecretString=f"value-{i}")["VersionId"]
        got = reader.get_secret_value(SecretId="raw/one")
        assert (got["VersionId"], got["SecretString"]) == (version, f"value-{i}")


def test_a_watcher_on_node_3_sees_a_promotion_made_on_node_1(cluster):
    a = cluster.nodes[0].client()
    arn = a.create_secret(Name="watched/one", SecretString="before")["ARN"]
    status, out = awsraw.call(cluster.nodes[2], "baton.WatchSecrets",
                              {"Secrets": [{"SecretId": arn}], "WaitSeconds": 0})
    assert status == 200, out
    revision = out["Changed"][0]["Revision"]
    answer = {}

    def watch():
        answer["at"], answer["body"] = None, awsraw.call(
            cluster.nodes[2], "baton.WatchSecrets",
            {"Secrets": [{"SecretId": arn, "Revision": revision}], "WaitSeconds": 15})
        answer["at"] = time.time()

    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(1)  # the watch is waiting on node 3
    written = time.time()
    a.put_secret_value(SecretId=arn, SecretString="after")  # promoted to AWSCURRENT on node 1
    watcher.join(20)
    status, body = answer["body"]
    assert status == 200 and [c["ARN"] for c in body["Changed"]] == [arn], body
    assert answer["at"] - written < 3, "node 3 heard of node 1's commit promptly"


def test_killing_the_driving_node_hands_the_rotation_to_another(cluster):
    arn, new, old_version, holder, token = rotation_inside_its_slow_step(cluster, "kill")
    victim = cluster.node(holder)
    killed_at = time.time()
    cluster.kill(victim)
    r = wait_succeeded(cluster, arn)
    took = time.time() - killed_at
    check_invariants(cluster, arn, new, old_version)
    last_holder, last_token, _ = cluster.lease(arn)
    assert last_holder != holder and last_token > token, (holder, token, last_holder, last_token)
    print(f"takeover: the rotation finished {took:.1f} s after its node was killed "
          f"(lease {LEASE_SECONDS} s, slow step {SLOW_STEP_SECONDS} s)")
    cluster.restart(victim)


def test_a_node_paused_past_its_lease_writes_nothing_stale(cluster):
    arn, new, old_version, holder, _ = rotation_inside_its_slow_step(cluster, "pause")
    sleeper = cluster.node(holder)
    cluster.pause(sleeper)
    wait_succeeded(cluster, arn)
    check_invariants(cluster, arn, new, old_version)
    settled = cluster.live()[0].client().describe_secret(SecretId=arn)
    rows_before = cluster.sql(f"SELECT revision FROM secrets WHERE arn = '{arn}'")
    cluster.resume(sleeper)
    # It finishes its step and tries to record it with its old token.
    deadline = time.time() + 15
    while "fenced out" not in sleeper.read_log() and time.time() < deadline:
        time.sleep(0.2)
    assert "fenced out" in sleeper.read_log() or "lost the rotation's lease" in sleeper.read_log()
    time.sleep(1)
    assert cluster.sql(f"SELECT revision FROM secrets WHERE arn = '{arn}'") == rows_before
    after = sleeper.client().describe_secret(SecretId=arn)
    assert after["VersionIdsToStages"] == settled["VersionIdsToStages"]
    check_invariants(cluster, arn, new, old_version)


def test_rotations_under_random_kills_and_pauses_keep_their_invariants(cluster):
    seed = int(os.environ.get("BATON_NODES_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"BATON_NODES_SEED={seed}")
    lam = slow_rotator(cluster, "slow-random")
    arn = new_secret(cluster, "rotated/random", lam)
    double_promotions = violations = 0
    started = time.time()
    rounds = int(os.environ.get("BATON_NODES_ROUNDS", 5))
    for round_ in range(rounds):
        assert time.time() - started < 60 * rounds, "the randomized run is bounded in time"
        stages = cluster.live()[0].client().describe_secret(SecretId=arn)["VersionIdsToStages"]
        old_version = next(v for v, l in stages.items() if "AWSCURRENT" in l)
        new = start_rotation(cluster, arn, lam, node=rng.choice(cluster.live()))
        action = rng.choice(["none", "kill", "pause"])
        time.sleep(rng.uniform(0, 2))
        lease = cluster.lease(arn)
        victim = cluster.node(lease[0]) if lease and lease[2] else None
        if victim is not None and victim in cluster.live() and len(cluster.live()) > 1:
            if action == "kill":
                cluster.kill(victim)
            elif action == "pause":
                cluster.pause(victim)
        wait_succeeded(cluster, arn, timeout=90)
        try:
            check_invariants(cluster, arn, new, old_version)
        except AssertionError as e:
            violations += 1
            print(f"round {round_}: {e}")
        events = [e["Event"] for e in describe(cluster, arn)["Timeline"]]
        double_promotions += max(0, events.count("phase promoted") - 1)
        for node in cluster.nodes:
            if cluster.is_paused(node):
                cluster.resume(node)
            elif node.process.poll() is not None:
                cluster.restart(node)
        print(f"round {round_}: {action} on {victim and lease[0]}: ok")
    assert (violations, double_promotions) == (0, 0), f"seed {seed}"


def audit_verify(node):
    from conftest import BATON
    from test_cli import env_for
    out = subprocess.run([str(BATON), "audit", "verify", "--output", "json", "--page", "7"],
                         env=env_for(node), capture_output=True, text=True, timeout=60)
    return out.returncode, json.loads(out.stdout), out.stderr


def test_each_node_appends_to_its_own_audit_chain_and_verify_checks_every_chain(cluster):
    """Each node registers a chain of its own in the shared chain on its first entry and
    appends to it without waiting for the others; `audit verify` (paged by 7, so pages cross
    chains) checks every chain from any node and finds an edited entry in a node's chain, and a
    chain removed whole after a later node's registration pinned its end."""
    a, b, c = (n.client() for n in cluster.nodes)
    a.create_secret(Name="chained/one", SecretString="chain-value")
    for _ in range(5):
        a.get_secret_value(SecretId="chained/one")
    for client in (b, c):
        for _ in range(5):
            client.get_secret_value(SecretId="chained/one")
    starts = cluster.sql("SELECT resource, chain_seq FROM audit_log WHERE chain = '' "
                         "AND action = 'baton:StartAuditChain' ORDER BY chain_seq")
    assert len(starts) == 3, starts
    chains = [s[0] for s in starts]
    counts = dict(cluster.sql("SELECT chain, COUNT(*) FROM audit_log GROUP BY chain"))
    assert set(counts) == {"", *chains}, counts
    assert all(int(counts[ch]) >= 5 for ch in chains), counts
    # Positions in each chain are consecutive from 1; the whole log's seq is unique.
    for ch in chains:
        seqs = [int(r[0]) for r in cluster.sql(f"SELECT chain_seq FROM audit_log WHERE chain = '{ch}' ORDER BY chain_seq")]
        assert seqs == list(range(1, len(seqs) + 1)), (ch, seqs)

    total = sum(int(n) for n in counts.values())
    rc, report, err = audit_verify(cluster.nodes[2])
    assert rc == 0, (report, err)
    assert report["Problems"] == [] and report["Chains"] == 4, report
    assert report["Checked"] >= total, (report, total)
    # Every chain's end (pages of 7 cross chains), each the position and MAC stored there.
    assert [e["Chain"] for e in report["Ends"]] == ["", *chains], report["Ends"]
    for end in report["Ends"]:
        stored = cluster.sql(f"SELECT encode(hash, 'hex') FROM audit_log WHERE chain = '{end['Chain']}' "
                             f"AND chain_seq = {end['LastSeq']}")
        assert stored == [[end["LastHash"]]], (end, stored)
        assert end["LastSeq"] >= int(counts[end["Chain"]]), (end, counts)

    # An entry of node 1's chain, edited.
    chain_b = chains[1]
    cluster.sql(f"UPDATE audit_log SET decision = 'deny' WHERE chain = '{chain_b}' AND chain_seq = 3")
    rc, report, _ = audit_verify(cluster.nodes[2])
    assert rc == 1
    assert [(p["Chain"], p["Seq"], "edited" in p["Problem"]) for p in report["Problems"]] == [(chain_b, 3, True)]
    cluster.sql(f"UPDATE audit_log SET decision = 'allow' WHERE chain = '{chain_b}' AND chain_seq = 3")
    rc, report, _ = audit_verify(cluster.nodes[2])
    assert rc == 0, report

    # Node 0's chain, removed whole: node 1's registration pinned its end, so node 2 (which
    # never wrote to it) still finds the loss. Nothing is sent to node 0 afterwards.
    pinned = json.loads(cluster.sql(f"SELECT reason FROM audit_log WHERE chain = '' AND resource = '{chains[1]}' "
                                    "AND action = 'baton:StartAuditChain'")[0][0])["pins"]
    assert [p[0] for p in pinned] == [chains[0]], pinned
    cluster.sql(f"DELETE FROM audit_log WHERE chain = '{chains[0]}'")
    rc, report, _ = audit_verify(cluster.nodes[2])
    assert rc == 1
    problems = [(p["Chain"], "removed from its end" in p["Problem"]) for p in report["Problems"]]
    assert problems == [(chains[0], True)], report


def test_audit_tail_follow_prints_an_entry_that_commits_after_a_later_one(cluster):
    """Each node numbers its entries in its own chain, while `seq` orders the whole log, so an
    entry can commit after another node's entry with a higher seq. `audit tail --follow` keeps
    a position in every chain, so it prints that entry anyway. Here node 0's append is held
    back: an open transaction holds the position in node 0's chain that the append needs."""
    from conftest import BATON
    from test_cli import env_for
    a, b, c = (n.client() for n in cluster.nodes)
    created = a.create_secret(Name="late/one", SecretString="late-value")
    for client in (b, c):
        client.get_secret_value(SecretId="late/one")
    follower = subprocess.Popen([str(BATON), "audit", "tail", "--follow", "-n", "0", "--output", "json"],
                                env=env_for(cluster.nodes[2]), stdout=subprocess.PIPE, text=True)
    printed = []
    threading.Thread(target=lambda: printed.extend(follower.stdout), daemon=True).start()

    def wait_printed(request_id, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(json.loads(line).get("RequestId") == request_id for line in list(printed)):
                return
            time.sleep(0.1)
        raise AssertionError(f"`audit tail --follow` did not print {request_id}: {printed}")

    def wait_sql(query, want, timeout=15):
        deadline = time.time() + timeout
        while cluster.sql(query) != [[want]]:
            assert time.time() < deadline, (query, cluster.sql(query))
            time.sleep(0.05)

    hold = None
    try:
        # The follower's own requests are audited too: once it prints one, it is following.
        deadline = time.time() + 15
        while not printed:
            assert time.time() < deadline and follower.poll() is None, "the follower printed nothing"
            time.sleep(0.1)
        wait_printed(c.get_secret_value(SecretId="late/one")["ResponseMetadata"]["RequestId"])
        chain_a = cluster.sql("SELECT chain FROM audit_log WHERE request_id = "
                              f"'{created['ResponseMetadata']['RequestId']}'")[0][0]
        assert chain_a.startswith("node-"), chain_a
        # An open transaction takes node 0's next position (and a seq); node 0's next append
        # takes a higher seq, then waits on the position until the transaction rolls back.
        hold = subprocess.Popen(["psql", cluster.url, "-v", "ON_ERROR_STOP=1", "-q"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, text=True)
        hold.stdin.write("BEGIN;\nINSERT INTO audit_log (at, request_id, principal, access_key_id, action, "
                         "resource, decision, outcome, status, source_ip, reason, prev_hash, hash, user_agent, "
                         "chain, chain_seq) SELECT at, 'held', principal, access_key_id, action, resource, "
                         "decision, outcome, status, source_ip, reason, prev_hash, hash, user_agent, chain, "
                         f"chain_seq + 1 FROM audit_log WHERE chain = '{chain_a}' ORDER BY chain_seq DESC LIMIT 1;\n")
        hold.stdin.flush()
        wait_sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                 "AND state = 'idle in transaction'", "1")
        late = {}
        reader = threading.Thread(target=lambda: late.update(a.get_secret_value(SecretId="late/one")))
        reader.start()
        wait_sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                 "AND wait_event_type = 'Lock'", "1")
        later = b.get_secret_value(SecretId="late/one")["ResponseMetadata"]["RequestId"]
        wait_printed(later)
        time.sleep(1.5)  # the follower polls once a second: let it pass the later entry's seq
        hold.stdin.write("ROLLBACK;\n")
        hold.stdin.close()
        hold.wait(timeout=15)
        reader.join(timeout=15)
        late_id = late["ResponseMetadata"]["RequestId"]
        late_seq, later_seq = (int(cluster.sql(f"SELECT seq FROM audit_log WHERE request_id = '{r}'")[0][0])
                               for r in (late_id, later))
        assert late_seq < later_seq, (late_seq, later_seq)
        wait_printed(late_id)
        ids = [json.loads(line).get("RequestId") for line in printed]
        assert ids.count(late_id) == 1 and ids.count(later) == 1, ids
    finally:
        follower.kill()
        if hold and hold.poll() is None:
            hold.kill()
