"""The seed's two scenarios end to end, with real processes over loopback: three verifiers and
two signers exchange HMAC-signed requests, and two session services encrypt and decrypt each
other's sessions, while the key rotates ten times. Every consumer uses baton-client's keyring
cache, so the rotations finish on acknowledgements, in seconds, although T is five minutes, and
not one request fails.
"""

import json
import os
import signal
import subprocess
import threading
import time
import urllib.request

import awsraw
from conftest import ACCESS_KEY_ID, SECRET_ACCESS_KEY, TARGET_DIR, free_port

ROTATIONS = 10
T_SECONDS = 300
BIN = TARGET_DIR / "debug"


def read_stats(path):
    for _ in range(50):
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            time.sleep(0.1)
    raise AssertionError(f"no stats in {path}")


def wait_for_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def post(port, path, body):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=5) as r:
        return r.read()


def test_services_never_fail_a_request_while_their_keys_rotate(server, sm, unique_name, tmp_path):
    hmac_secret, session_secret = unique_name + "/hmac", unique_name + "/sessions"
    for name in (hmac_secret, session_secret):
        sm.create_secret(Name=name, SecretString="initial-key-material-" + name)
        status, body = awsraw.call(server, "baton.PutRotationPolicy", {
            "SecretId": name, "PropagationDelaySeconds": T_SECONDS, "MaxGateWaitSeconds": T_SECONDS,
            # Requests signed just before the drain gate are still in flight for a moment.
            "RetireGraceSeconds": 1})
        assert status == 200, body
    env = dict(os.environ, AWS_ENDPOINT_URL=server.endpoint, AWS_REGION="us-east-1",
               AWS_ACCESS_KEY_ID=ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY)
    processes, stats = [], {}

    def spawn(kind, label, *args):
        stats[label] = tmp_path / f"{label}.json"
        processes.append(subprocess.Popen(
            [str(BIN / kind), *args, "--stats", str(stats[label])],
            env=dict(env, INSTANCE_ID=label), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    stop = threading.Event()
    driver = None
    session_failures, session_round_trips = [], [0]
    try:
        verifier_ports = [free_port() for _ in range(3)]
        for i, port in enumerate(verifier_ports):
            spawn("hmac-verifier", f"verifier-{i}", "--secret", hmac_secret, "--port", str(port))
        session_ports = [free_port() for _ in range(2)]
        for i, port in enumerate(session_ports):
            spawn("session-service", f"session-{i}", "--secret", session_secret, "--port", str(port))
        for port in verifier_ports + session_ports:
            wait_for_port(port)
        urls = ",".join(f"http://127.0.0.1:{p}" for p in verifier_ports)
        for i in range(2):
            spawn("hmac-signer", f"signer-{i}", "--secret", hmac_secret, "--verifiers", urls,
                  "--interval-ms", "5")

        def sessions():
            n = 0
            while not stop.is_set():
                a, b = session_ports[n % 2], session_ports[(n + 1) % 2]
                plain = f"session-{n}".encode()
                try:
                    if post(b, "/decrypt", post(a, "/encrypt", plain)) != plain:
                        session_failures.append(f"round trip {n} changed the session")
                except Exception as e:  # noqa: BLE001 - any failure is what this counts
                    session_failures.append(f"round trip {n}: {e}")
                session_round_trips[0] += 1
                n += 1
                time.sleep(0.005)

        driver = threading.Thread(target=sessions)
        driver.start()
        time.sleep(1)

        lam = f"arn:aws:lambda:us-east-1:{server.account_id}:function:baton-random"
        durations = []
        for n in range(ROTATIONS):
            for name in (hmac_secret, session_secret):
                started = time.time()
                new = (sm.rotate_secret(SecretId=name, RotationLambdaARN=lam) if n == 0
                       else sm.rotate_secret(SecretId=name))["VersionId"]
                while True:
                    status, r = awsraw.call(server, "baton.DescribeRotation", {"SecretId": name})
                    assert status == 200, r
                    if r["VersionId"] == new and r["Status"] in ("Succeeded", "Stopped"):
                        break
                    assert time.time() - started < T_SECONDS / 2, f"rotation {n} of {name} waits on T: {r}"
                    time.sleep(0.05)
                assert r["Status"] == "Succeeded", r
                events = [e["Event"] for e in r["Timeline"]]
                assert "propagation gate passed" in events and "drain gate passed" in events, events
                durations.append(time.time() - started)
        time.sleep(1)
    finally:
        # The driver finishes its round trip before the services stop, or it would count
        # their shutdown as a failure.
        stop.set()
        if driver is not None:
            driver.join(timeout=10)
        # Signers were started last: stop them first, so none sends to a stopped verifier.
        for p in reversed(processes):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    results = {label: read_stats(path) for label, path in stats.items()}
    print(f"\nrotation seconds: {[round(d, 2) for d in durations]}; T = {T_SECONDS} s")
    print(json.dumps(results, indent=1))
    signed = sum(results[f"signer-{i}"]["sent"] for i in range(2))
    verified = sum(results[f"verifier-{i}"]["verified"] for i in range(3))
    assert signed > 500 and verified > 500, "traffic flowed throughout"
    for i in range(2):
        s = results[f"signer-{i}"]
        assert s["refused"] == 0 and s["unreachable"] == 0, s
    for i in range(3):
        v = results[f"verifier-{i}"]
        assert v["refused_unknown_key"] == v["refused_invalid"] == v["refused_malformed"] == 0, v
    assert session_failures == [], session_failures[:5]
    assert session_round_trips[0] > 100
    assert sum(results[f"session-{i}"]["refused"] for i in range(2)) == 0
    # The services held the latest keyring: the cache refreshed on every rotation.
    status, consumers = awsraw.call(server, "baton.ListConsumers", {"SecretId": hmac_secret})
    assert status == 200 and len([c for c in consumers["Consumers"] if c["Live"]]) == 5, consumers
    assert {c["CurrentVersionId"] for c in consumers["Consumers"]} == {consumers["CurrentVersionId"]}
