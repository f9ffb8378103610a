"""Zero downtime behind AWS's own caching library.

Three instances of a service share an HMAC key (the seeds' symmetric key J). Each reads it
through its own `SecretCache` from AWS's `aws-secretsmanager-caching` package, which refreshes
with DescribeSecret every refresh interval and fetches a value only when a label moved. Each
signs with AWSCURRENT and verifies with AWSPENDING, AWSCURRENT and AWSPREVIOUS. Messages travel
between instances with random delays up to 500 ms while `baton-random` rotates the key.

With the propagation delay T set to the refresh interval plus 2 s, as the README says, no
verification fails. The control with T = 0 shows that the test can fail.
"""

import hashlib
import hmac
import heapq
import random
import threading
import time

import awsraw
from aws_secretsmanager_caching import SecretCache, SecretCacheConfig

REFRESH_SECONDS = 3
STAGES = ("AWSPENDING", "AWSCURRENT", "AWSPREVIOUS")
DELAY_MAX_SECONDS = 0.5
SEND_INTERVAL_SECONDS = 0.05


def call(server, target, payload):
    status, body = awsraw.call(server, target, payload)
    assert status == 200, (target, body)
    return body


class Instance:
    """One instance of the service: its own cache, an inbox of messages in flight."""

    def __init__(self, name, client, secret_id):
        self.name = name
        self.secret_id = secret_id
        self.cache = SecretCache(config=SecretCacheConfig(secret_refresh_interval=REFRESH_SECONDS), client=client)
        self.inbox = []
        self.lock = threading.Lock()
        self.sent = 0
        self.verified = 0
        self.failures = []
        self.keys_seen = set()

    def sign(self, body):
        key = self.cache.get_secret_string(self.secret_id, "AWSCURRENT")
        self.keys_seen.add(hashlib.sha256(key.encode()).hexdigest()[:12])
        return hmac.new(key.encode(), body, hashlib.sha256).digest()

    def verify(self, body, tag):
        for stage in STAGES:
            key = self.cache.get_secret_string(self.secret_id, stage)
            if key is not None and hmac.compare_digest(hmac.new(key.encode(), body, hashlib.sha256).digest(), tag):
                return True
        return False

    def deliver(self, at, body, tag):
        with self.lock:
            heapq.heappush(self.inbox, (at, body, tag))

    def due(self, now):
        out = []
        with self.lock:
            while self.inbox and self.inbox[0][0] <= now:
                out.append(heapq.heappop(self.inbox))
        return out


def run_service(server, sm, name, propagation_delay_seconds, rotations):
    """Runs three instances while `rotations` rotations complete; returns the instances."""
    sm.create_secret(Name=name, SecretString=random.randbytes(32).hex())
    call(server, "baton.PutRotationPolicy", {
        "SecretId": name, "PropagationDelaySeconds": propagation_delay_seconds,
        "RetireGraceSeconds": 1, "MaxGateWaitSeconds": 600})
    instances = [Instance(f"i-{k}", server.client(), name) for k in range(3)]
    stop = threading.Event()
    rng = random.Random(name)

    def work(index):
        me = instances[index]
        # Staggered first fetches, so the caches' refreshes fall at different times.
        time.sleep(index * REFRESH_SECONDS / 3)
        n = 0
        while not stop.is_set():
            now = time.monotonic()
            for _, body, tag in me.due(now):
                me.verified += 1
                if not me.verify(body, tag):
                    me.failures.append((time.time(), body))
            n += 1
            body = f"{me.name}:{n}".encode()
            target = instances[(index + 1 + rng.randrange(len(instances) - 1)) % len(instances)]
            target.deliver(now + rng.uniform(0, DELAY_MAX_SECONDS), body, me.sign(body))
            me.sent += 1
            time.sleep(SEND_INTERVAL_SECONDS)

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(len(instances))]
    for t in threads:
        t.start()
    try:
        # Every cache has read the key before the first rotation starts.
        time.sleep(REFRESH_SECONDS + 1)
        lam = f"arn:aws:lambda:us-east-1:{server.account_id}:function:baton-random"
        for _ in range(rotations):
            version = sm.rotate_secret(SecretId=name, RotationLambdaARN=lam)["VersionId"]
            done = awsraw.wait_rotation(
                server, name, lambda r: r["VersionId"] == version and r["Status"] != "InProgress", timeout=120)
            assert done["Status"] == "Succeeded", done
            # Messages in flight and caches that have not refreshed yet meet the retired key.
            time.sleep(REFRESH_SECONDS)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    return instances


def test_rotation_behind_aws_caching_library_fails_no_verification(server, sm, unique_name):
    instances = run_service(server, sm, unique_name, REFRESH_SECONDS + 2, rotations=4)
    verified = sum(i.verified for i in instances)
    failures = [f for i in instances for f in i.failures]
    assert verified > 1000, verified
    assert failures == [], f"{len(failures)} of {verified} verifications failed"
    # Every instance signed with the first key and every rotated one.
    for instance in instances:
        assert len(instance.keys_seen) == 5, (instance.name, instance.keys_seen)
    # The caches polled with DescribeSecret, which Baton counted as reads.
    listed = call(server, "baton.ListConsumers", {"SecretId": unique_name})
    assert listed.get("LastPlainReadDate"), listed


def test_control_rotation_with_no_propagation_delay_fails_verifications(server, sm, unique_name):
    instances = run_service(server, sm, unique_name, 0, rotations=4)
    failures = sum(len(i.failures) for i in instances)
    assert failures > 0, "the control showed no failure: the test could not catch one"


def test_every_read_of_a_secret_is_counted_as_a_plain_read(server, sm, unique_name):
    """DescribeSecret, GetSecretValue of a missing stage, BatchGetSecretValue and
    ListSecretVersionIds each show a reader; a secret nobody read shows none."""
    reads = {
        "describe": lambda n: sm.describe_secret(SecretId=n),
        "missing-stage": lambda n: sm.get_secret_value(SecretId=n, VersionStage="AWSPENDING"),
        "batch": lambda n: sm.batch_get_secret_value(SecretIdList=[n]),
        "versions": lambda n: sm.list_secret_version_ids(SecretId=n),
    }
    for what, read in reads.items():
        name = f"{unique_name}-{what}"
        sm.create_secret(Name=name, SecretString="value-of-some-length")
        assert "LastPlainReadDate" not in call(server, "baton.ListConsumers", {"SecretId": name}), what
        try:
            read(name)
        except sm.exceptions.ResourceNotFoundException:
            assert what == "missing-stage"
        assert call(server, "baton.ListConsumers", {"SecretId": name}).get("LastPlainReadDate"), what


def test_awspending_stays_on_the_new_version_from_promotion_until_retirement(server, sm, unique_name):
    old = sm.create_secret(Name=unique_name, SecretString="first-value-long-enough")["VersionId"]
    call(server, "baton.PutRotationPolicy", {
        "SecretId": unique_name, "PropagationDelaySeconds": 2, "RetireGraceSeconds": 3600,
        "MaxGateWaitSeconds": 3600})
    sm.describe_secret(SecretId=unique_name)  # a plain reader: the gates wait T
    lam = f"arn:aws:lambda:us-east-1:{server.account_id}:function:baton-random"
    new = sm.rotate_secret(SecretId=unique_name, RotationLambdaARN=lam)["VersionId"]
    awsraw.wait_rotation(server, unique_name, lambda r: r["Phase"] == "promoted")
    # Held at the drain gate by the hour-long retire grace.
    stages = sm.describe_secret(SecretId=unique_name)["VersionIdsToStages"]
    assert {k: sorted(v) for k, v in stages.items()} == {new: ["AWSCURRENT", "AWSPENDING"], old: ["AWSPREVIOUS"]}
    listed = {v["VersionId"]: sorted(v["VersionStages"]) for v in sm.list_secret_version_ids(SecretId=unique_name)["Versions"]}
    assert listed == {new: ["AWSCURRENT", "AWSPENDING"], old: ["AWSPREVIOUS"]}
    assert sm.get_secret_value(SecretId=unique_name, VersionStage="AWSPENDING")["VersionId"] == new
    ring = call(server, "baton.GetSecretKeyring", {"SecretId": unique_name})
    assert ring["Current"]["VersionId"] == new
    assert [v["VersionId"] for v in ring["Accepted"]] == [new, old]
    # Past promotion a rotation can no longer be cancelled; the label stays where it is.
    status, body = awsraw.call(server, "secretsmanager.CancelRotateSecret", {"SecretId": unique_name})
    assert status == 400 and "promotion" in awsraw.error_of(body)[1], body
    assert sorted(sm.describe_secret(SecretId=unique_name)["VersionIdsToStages"][new]) == ["AWSCURRENT", "AWSPENDING"]
    # Retirement removes AWSPENDING and AWSPREVIOUS together.
    call(server, "baton.ResumeRotation", {"SecretId": unique_name, "Force": True})
    awsraw.wait_rotation(server, unique_name, lambda r: r["Status"] == "Succeeded")
    assert sm.describe_secret(SecretId=unique_name)["VersionIdsToStages"] == {new: ["AWSCURRENT"]}
    # The next rotation takes AWSPENDING for its own version and runs as before.
    call(server, "baton.PutRotationPolicy", {"SecretId": unique_name, "PropagationDelaySeconds": 0, "RetireGraceSeconds": 0})
    third = sm.rotate_secret(SecretId=unique_name)["VersionId"]
    awsraw.wait_rotation(server, unique_name, lambda r: r["VersionId"] == third and r["Status"] == "Succeeded")
    assert sm.describe_secret(SecretId=unique_name)["VersionIdsToStages"] == {third: ["AWSCURRENT"]}
