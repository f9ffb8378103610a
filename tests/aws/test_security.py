"""The security fixes of issue 16, each reproduced as the attack was made and shown to fail:
slow clients cannot starve the server, consumer reports cannot be forged, webhooks cannot reach
into the server's network, a captured request cannot be turned into another operation, metrics
need a token, tags cannot carry control characters, and commands come from the operator only.

The database-rotator attack (a scoped principal taking over a superuser through the master
secret) is in test_db_rotation.py, where the databases are."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

import awsraw
from conftest import BATON


def call(server, target, payload, **kw):
    status, body = awsraw.call(server, target, payload, **kw)
    assert status == 200, (target, body)
    return body


def scoped(server, name, actions, resources):
    """A service principal with one policy; returns (access key id, secret)."""
    document = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": actions, "Resource": resources}]})
    call(server, "baton.CreatePrincipal", {"Name": name, "Kind": "service"})
    call(server, "baton.PutPrincipalPolicy", {"PrincipalName": name, "PolicyName": "p", "PolicyDocument": document})
    key = call(server, "baton.CreateAccessKey", {"PrincipalName": name})["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def health(srv, source="127.0.0.1", timeout=2):
    """GET /health from `source`, over a socket of our own so the source address is chosen."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=timeout, source_address=(source, 0)) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data


# ---------------------------------------------------------------- connection hygiene

def test_slow_bodies_do_not_hold_the_server_and_health_keeps_answering(fresh):
    srv = fresh(extra_args=["--connections-max", "5", "--request-read-timeout-seconds", "2"]).start()
    slow = []
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.1\r\n"
                  b"Content-Length: 1000\r\n\r\n{")
        slow.append(s)
    stop = threading.Event()

    def trickle():
        while not stop.is_set():
            for s in slow:
                try:
                    s.sendall(b" ")
                except OSError:
                    pass
            time.sleep(0.3)

    feeder = threading.Thread(target=trickle, daemon=True)
    feeder.start()
    try:
        started = time.time()
        while True:
            try:
                if health(srv).startswith(b"HTTP/1.1 200"):
                    break
            except OSError:
                pass
            assert time.time() - started < 8, "/health did not answer while slow bodies trickled in"
            time.sleep(0.2)
        # Each slow request was ended: answered 408 and closed, or (when the deadline fell while
        # the connection was being torn down on a loaded machine) closed. Either way it no
        # longer holds a connection slot, which /health answering above shows.
        for s in slow:
            s.settimeout(5)
            answer = s.recv(4096)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:100]
            if answer:
                while s.recv(4096):
                    pass  # then closed
    finally:
        stop.set()
        for s in slow:
            s.close()


def test_one_address_cannot_take_every_connection_and_idle_connections_are_closed(fresh):
    srv = fresh(extra_args=["--connections-per-address-max", "3", "--request-read-timeout-seconds", "2"]).start()
    held = [socket.create_connection(("127.0.0.1", srv.port), source_address=("127.0.0.2", 0)) for _ in range(3)]
    try:
        # One of them makes a request and then stays idle, kept alive.
        held[0].sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert held[0].recv(4096).startswith(b"HTTP/1.1 200")
        time.sleep(0.2)
        # A fourth connection from the same address is closed without an answer...
        try:
            data = health(srv, source="127.0.0.2")
        except OSError:
            data = b""
        assert data == b"", f"a fourth connection was served: {data[:60]!r}"
        # ...while another address is served.
        assert health(srv, source="127.0.0.3").startswith(b"HTTP/1.1 200")
        # The idle ones, silent or kept alive after a request, are closed after the read timeout.
        for s in held:
            s.settimeout(6)
            assert s.recv(1) == b"", "an idle connection was kept open"
    finally:
        for s in held:
            s.close()


# ---------------------------------------------------------------- signing

def test_a_request_whose_target_is_not_signed_is_refused(server, sm, unique_name):
    sm.create_secret(Name=unique_name, SecretString="some-value-here")

    def swap_target(signed, body):
        signed["x-amz-target"] = "baton.ListPrincipals"
        return body

    status, body = awsraw.call(server, None, {}, tamper=swap_target)
    assert status in (400, 403), body
    assert body["__type"] == "InvalidSignatureException" and "x-amz-target" in awsraw.error_of(body)[1], body
    # Signed, the same call works: the refusal is about the signature, not the operation.
    call(server, "baton.ListPrincipals", {})


# ---------------------------------------------------------------- consumer reports

def test_a_consumer_report_is_bound_to_its_principal_and_to_real_versions(server, sm, unique_name):
    # No plain read of this secret anywhere in the test: only reports may move its gates.
    created = sm.create_secret(Name=unique_name, SecretString="first-value-long")
    arn, old = created["ARN"], created["VersionId"]
    actions = ["baton:ReportConsumer", "baton:GetSecretKeyring"]
    suffix = unique_name.rsplit("-", 1)[-1]
    a_id, a_secret = scoped(server, f"reporter-a-{suffix}", actions, [arn])
    b_id, b_secret = scoped(server, f"reporter-b-{suffix}", actions, [arn])
    as_a = dict(access_key=a_id, secret_key=a_secret)
    as_b = dict(access_key=b_id, secret_key=b_secret)
    report = {"Application": "verifier", "InstanceId": "i-1", "LeaseSeconds": 60,
              "Holdings": [{"SecretId": arn, "CurrentVersionId": old, "AcceptedVersionIds": [old]}]}
    call(server, "baton.ReportConsumer", report, **as_a)
    # B cannot overwrite A's instance, by report or by keyring fetch.
    status, body = awsraw.call(server, "baton.ReportConsumer", report, **as_b)
    assert status == 400 and body["__type"] == "AccessDeniedException", body
    assert "another principal" in awsraw.error_of(body)[1]
    status, body = awsraw.call(server, "baton.GetSecretKeyring", {
        "SecretId": arn, "Consumer": {"Application": "verifier", "InstanceId": "i-1"}}, **as_b)
    assert status == 400 and body["__type"] == "AccessDeniedException", body
    # A version the secret does not have cannot be reported, by anyone.
    made_up = "f" * 36
    forged = {**report, "InstanceId": "i-2",
              "Holdings": [{"SecretId": arn, "CurrentVersionId": made_up, "AcceptedVersionIds": [made_up]}]}
    status, body = awsraw.call(server, "baton.ReportConsumer", forged, **as_b)
    assert status == 400 and body["__type"] == "ValidationException" and made_up in awsraw.error_of(body)[1], body
    listed = call(server, "baton.ListConsumers", {"SecretId": arn})["Consumers"]
    assert [(c["InstanceId"], c["Principal"].rsplit("/", 1)[-1]) for c in listed] == [("i-1", f"reporter-a-{suffix}")]

    # A rotation held by A's lagging instance cannot be passed by B reporting for it.
    call(server, "baton.PutRotationPolicy", {"SecretId": arn, "PropagationDelaySeconds": 3600,
                                             "MaxGateWaitSeconds": 3600, "RetireGraceSeconds": 0})
    lam = f"arn:aws:lambda:us-east-1:{server.account_id}:function:baton-random"
    new = sm.rotate_secret(SecretId=arn, RotationLambdaARN=lam)["VersionId"]
    awsraw.wait_rotation(server, arn, lambda r: r["Phase"] == "tested", timeout=30)
    claim = {**report, "Holdings": [{"SecretId": arn, "CurrentVersionId": old, "AcceptedVersionIds": [new, old]}]}
    status, body = awsraw.call(server, "baton.ReportConsumer", claim, **as_b)
    assert status == 400 and body["__type"] == "AccessDeniedException", body
    time.sleep(1.5)
    assert call(server, "baton.DescribeRotation", {"SecretId": arn})["Phase"] == "tested", "the gate still holds"
    # A's own report passes it.
    call(server, "baton.ReportConsumer", claim, **as_a)
    awsraw.wait_rotation(server, arn, lambda r: r["Phase"] != "tested", timeout=30)


# ---------------------------------------------------------------- outbound URLs

@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "https://169.254.169.254/latest/meta-data",
                                 "https://localhost:8443/hook", "https://[::1]/hook", "https://10.0.0.8/hook"])
def test_webhooks_to_private_addresses_are_refused_without_the_flag(fresh, url):
    srv = fresh(allow_private_webhooks=False).start()
    status, body = awsraw.call(srv, "baton.CreateSubscription", {"Url": url})
    assert status == 400 and body["__type"] == "InvalidParameterException", body
    assert "--allow-private-webhooks" in awsraw.error_of(body)[1], body
    status, body = awsraw.call(srv, "baton.CreateRotator", {"Name": "hook", "WebhookUrl": url})
    assert status == 400 and "--allow-private-webhooks" in awsraw.error_of(body)[1], body


def test_a_stored_private_webhook_is_refused_at_delivery_and_the_caller_learns_nothing(fresh, tmp_path):
    received = []

    class Receiver(threading.Thread):
        def run(self):
            import http.server

            class Handler(http.server.BaseHTTPRequestHandler):
                def do_POST(self):
                    received.append(self.rfile.read(int(self.headers["Content-Length"])))
                    self.send_response(200)
                    self.end_headers()

                def log_message(self, *args):
                    pass

            self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
            self.port = self.httpd.server_address[1]
            ready.set()
            self.httpd.serve_forever()

    ready = threading.Event()
    receiver = Receiver(daemon=True)
    receiver.start()
    ready.wait(5)
    srv = fresh().start()  # with the flag: the subscription is accepted
    sub = call(srv, "baton.CreateSubscription", {"Url": f"http://127.0.0.1:{receiver.port}/", "MaxAttempts": 1})
    srv.stop()
    srv.allow_private_webhooks = False
    srv.start()
    srv.client().create_secret(Name="ssrf/probe", SecretString="value-of-probe")
    deadline = time.time() + 20
    while not (letters := call(srv, "baton.ListDeadLetters", {"SubscriptionId": sub["SubscriptionId"]})["DeadLetters"]):
        assert time.time() < deadline, "no dead letter"
        time.sleep(0.2)
    assert received == [], "the private receiver was contacted"
    assert letters[0]["LastError"] == "delivery failed", letters
    assert "--allow-private-webhooks" in srv.read_log()
    receiver.httpd.shutdown()


# ---------------------------------------------------------------- metrics and readiness

def test_metrics_need_the_token_and_ready_says_little_without_it(fresh):
    srv = fresh().start()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{srv.endpoint}/metrics", timeout=5)
    assert refused.value.code == 401
    wrong = urllib.request.Request(f"{srv.endpoint}/metrics", headers={"Authorization": "Bearer not-the-token"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(wrong, timeout=5)
    assert refused.value.code == 401
    srv.client().list_secrets()
    assert "baton_requests_total" in srv.metrics()
    with urllib.request.urlopen(f"{srv.endpoint}/ready", timeout=5) as r:
        assert json.loads(r.read()) == {"status": "ready"}
    detailed = urllib.request.Request(f"{srv.endpoint}/ready", headers={"Authorization": f"Bearer {srv.metrics_token}"})
    with urllib.request.urlopen(detailed, timeout=5) as r:
        assert "schema_version" in json.loads(r.read())
    with urllib.request.urlopen(f"{srv.endpoint}/health", timeout=5) as r:
        assert r.status == 200


def test_without_a_token_metrics_are_only_on_the_private_listener(fresh):
    from conftest import free_port

    port = free_port()
    srv = fresh(metrics_token=None, extra_args=["--metrics-listen", f"127.0.0.1:{port}"]).start()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{srv.endpoint}/metrics", timeout=5)
    assert refused.value.code == 404
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as r:
        assert "schema_version" in json.loads(r.read())


# ---------------------------------------------------------------- tags

@pytest.mark.parametrize("key, value", [("ok", "line\nbreak"), ("nul\x00key", "v"), ("bell", "\x07"), ("tab", "a\tb")])
def test_tags_with_control_characters_are_refused(server, sm, unique_name, key, value):
    sm.create_secret(Name=unique_name, SecretString="tagged-value")
    with pytest.raises(sm.exceptions.ClientError) as refused:
        sm.tag_resource(SecretId=unique_name, Tags=[{"Key": key, "Value": value}])
    error = refused.value.response["Error"]
    assert error["Code"] == "ValidationException" and "regular expression pattern" in error["Message"], error
    sm.tag_resource(SecretId=unique_name, Tags=[{"Key": "team name", "Value": "pay-ments_1/a:b@c+d=e"}])


# ---------------------------------------------------------------- command rotators

def test_commands_cannot_be_created_through_the_api(server, unique_name):
    status, body = awsraw.call(server, "baton.CreateRotator", {"Name": "cmd-" + unique_name.rsplit("-", 1)[-1],
                                                                "Command": "cat /etc/shadow"})
    assert status == 400 and "cannot be created through the API" in awsraw.error_of(body)[1], body


def wait_stopped(server, name, timeout=30):
    return awsraw.wait_rotation(server, name, lambda r: r["Status"] != "InProgress", timeout)


def test_a_command_gets_a_clean_environment(server, sm, unique_name, tmp_path):
    out = tmp_path / "env.txt"
    name = "env-" + unique_name.rsplit("-", 1)[-1]
    lam = server.add_command_rotator(name, ["/bin/sh", "-c", f"/usr/bin/env > {out}"], env={"ROTATOR_EXTRA": "yes"})
    sm.create_secret(Name=unique_name, SecretString="keep-this-value")
    call(server, "baton.PutRotationPolicy", {"SecretId": unique_name, "MaxAttempts": 1})
    sm.rotate_secret(SecretId=unique_name, RotationLambdaARN=lam)
    wait_stopped(server, unique_name)
    names = {line.split("=", 1)[0] for line in out.read_text().splitlines() if "=" in line}
    assert {"AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN", "ROTATOR_EXTRA"} <= names, names
    # Nothing of the server's own environment: not its bootstrap key, not its log settings.
    assert not any(n.startswith("BATON_") for n in names), names
    assert "RUST_LOG" not in names and "HOME" not in names, names
    out.unlink()


def test_a_step_timeout_ends_every_process_of_the_command(server, sm, unique_name, tmp_path):
    pid_file = tmp_path / "child.pid"
    name = "slow-" + unique_name.rsplit("-", 1)[-1]
    lam = server.add_command_rotator(name, ["/bin/sh", "-c", f"/bin/sleep 300 & echo $! > {pid_file}; wait"],
                                     timeout_seconds=1)
    sm.create_secret(Name=unique_name, SecretString="keep-this-value")
    call(server, "baton.PutRotationPolicy", {"SecretId": unique_name, "MaxAttempts": 1})
    sm.rotate_secret(SecretId=unique_name, RotationLambdaARN=lam)
    r = wait_stopped(server, unique_name)
    assert "did not finish" in r["StatusReason"], r
    child = int(pid_file.read_text())
    deadline = time.time() + 5
    while os.path.exists(f"/proc/{child}") and open(f"/proc/{child}/stat").read().split()[2] != "Z":
        assert time.time() < deadline, "the command's background process outlived the step"
        time.sleep(0.1)


def test_a_pinned_command_that_changed_is_refused(server, sm, unique_name, tmp_path):
    import hashlib

    script = tmp_path / "rotate.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o700)
    pinned = hashlib.sha256(b"#!/bin/sh\nexit 0\n").hexdigest()
    name = "pinned-" + unique_name.rsplit("-", 1)[-1]
    lam = server.add_command_rotator(name, [str(script)])
    path = server.rotators_dir / f"{name}.toml"
    path.write_text(path.read_text() + f'sha256 = "{pinned}"\n')
    script.write_text("#!/bin/sh\necho replaced\nexit 0\n")
    sm.create_secret(Name=unique_name, SecretString="keep-this-value")
    call(server, "baton.PutRotationPolicy", {"SecretId": unique_name, "MaxAttempts": 1})
    sm.rotate_secret(SecretId=unique_name, RotationLambdaARN=lam)
    r = wait_stopped(server, unique_name)
    assert "does not match the SHA-256" in r["StatusReason"], r


def test_a_command_registered_through_the_api_runs_only_after_the_operator_confirms_it(fresh, tmp_path):
    import sqlite3
    from pathlib import Path

    here = Path(__file__).parent
    srv = fresh().start()
    sm = srv.client()
    sm.create_secret(Name="legacy/secret", SecretString="initial-password")
    call(srv, "baton.PutRotationPolicy", {"SecretId": "legacy/secret", "MaxAttempts": 1,
                                          "PropagationDelaySeconds": 0, "RetireGraceSeconds": 0})
    srv.stop()
    # What an earlier version stored for `baton rotator create legacy --command ...`.
    command = (f"{sys.executable} -c \"import json, sys; sys.path.insert(0, '{here}'); "
               f"import rotation_function as f; f.lambda_handler(json.load(sys.stdin), None)\"")
    db = sqlite3.connect(srv.data_dir / "baton.db")
    db.execute("INSERT INTO rotators (name, kind, target, sealed_signing_secret, timeout_ms, created_at) "
               "VALUES ('legacy', 'command', ?, NULL, 120000, 0)", (command,))
    db.commit()
    db.close()
    srv.start()
    lam = f"arn:aws:lambda:us-east-1:{srv.account_id}:function:legacy"
    sm.rotate_secret(SecretId="legacy/secret", RotationLambdaARN=lam)
    r = wait_stopped(srv, "legacy/secret")
    assert r["Status"] == "Stopped" and "migrate-command-rotators --confirm legacy" in r["StatusReason"], r
    assert sm.get_secret_value(SecretId="legacy/secret")["SecretString"] == "initial-password"
    srv.stop()
    args = [str(BATON), "migrate-command-rotators", "--data-dir", str(srv.data_dir), "--rotators-dir", str(srv.rotators_dir)]
    listed = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0 and "legacy: " in listed.stdout and "--confirm" in listed.stdout, listed
    confirmed = subprocess.run(args + ["--confirm", "legacy"], capture_output=True, text=True, timeout=30)
    assert confirmed.returncode == 0, confirmed.stderr
    assert oct((srv.rotators_dir / "legacy.toml").stat().st_mode & 0o777) == "0o600"
    srv.start()
    listed = call(srv, "baton.ListRotators", {})["Rotators"]
    assert [(r["Name"], r["Source"]) for r in listed] == [("legacy", "configuration")], listed
    call(srv, "baton.ResumeRotation", {"SecretId": "legacy/secret"})
    done = awsraw.wait_rotation(srv, "legacy/secret", lambda r: r["Status"] != "InProgress")
    assert done["Status"] == "Succeeded", done
