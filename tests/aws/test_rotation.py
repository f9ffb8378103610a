"""Rotations end to end: the baton CLI drives them, and a server killed with SIGKILL at any step
boundary resumes them after a restart with every invariant intact."""

import json
import time
import uuid

import botocore.exceptions
import pytest

import awsraw
from test_cli import baton, env_for


def describe_rotation(srv, name):
    status, body = awsraw.call(srv, "baton.DescribeRotation", {"SecretId": name})
    assert status == 200, body
    return body


def test_the_cli_configures_starts_follows_and_reports_a_rotation(server, unique_name):
    baton(server, "secret", "create", unique_name, "--value", "initial")
    configured = baton(server, "rotation", "configure", unique_name, "--propagation-delay", "1",
                       "--retire-grace", "0", "--max-attempts", "3", "--blackout", "03:00-03:30").stdout
    assert "03:00-03:30" in configured
    started = baton(server, "rotation", "start", unique_name, "--rotator", "baton-random").stdout
    assert "started" in started
    watched = baton(server, "rotation", "status", unique_name, "--watch").stdout
    assert "phase promoted" in watched and "rotation Succeeded" in watched
    assert "propagation gate waiting" in watched
    history = baton(server, "rotation", "history", unique_name).stdout
    assert "phase retired" in history and "succeeded" in history
    status = json.loads(baton(server, "rotation", "status", unique_name, "--output", "json").stdout)
    assert status["Status"] == "Succeeded" and status["Phase"] == "retired"
    assert baton(server, "secret", "get", unique_name).stdout.strip() != "initial"
    refused = baton(server, "rotation", "retry", unique_name, check=False)
    assert refused.returncode == 1 and "nothing to retry" in refused.stderr
    refused = baton(server, "rotation", "advance", unique_name, check=False)
    assert refused.returncode == 2 and "--force" in refused.stderr


def test_the_watch_shows_what_each_gate_waits_for_and_every_phase(server, unique_name):
    baton(server, "secret", "create", unique_name, "--value", "initial")
    baton(server, "rotation", "configure", unique_name, "--propagation-delay", "3", "--retire-grace", "1")
    baton(server, "secret", "get", unique_name)  # a reader that does not report: the gates wait T
    baton(server, "rotation", "start", unique_name, "--rotator", "baton-random")
    # The engine takes the first steps on its next pass: a loaded machine may need a moment.
    deadline = time.time() + 10
    while "gate has waited" not in (status := baton(server, "rotation", "status", unique_name).stdout):
        assert time.time() < deadline, status
        time.sleep(0.1)
    assert "T = 3 s" in status, status
    watched = baton(server, "rotation", "status", unique_name, "--watch").stdout
    for phase in ("created", "tested", "promoted", "drained", "retired"):
        assert f"phase {phase}" in watched, watched
    assert "the propagation gate has waited" in watched and "readers that do not report" in watched, watched
    assert "rotation Succeeded" in watched


def test_rotation_configure_changes_only_the_settings_it_is_given(server, unique_name):
    baton(server, "secret", "create", unique_name, "--value", "initial")

    def policy():
        return json.loads(baton(server, "rotation", "status", unique_name, "--output", "json").stdout)["Policy"]

    baton(server, "rotation", "configure", unique_name, "--propagation-delay", "120", "--retire-grace", "30",
          "--max-gate-wait", "900", "--max-attempts", "5", "--blackout", "08:00-18:00", "--kill-sessions")
    first = policy()
    # Each setting alone: only it changes.
    for flags, key, value in [
        (["--propagation-delay", "60"], "PropagationDelaySeconds", 60),
        (["--retire-grace", "10"], "RetireGraceSeconds", 10),
        (["--max-gate-wait", "600"], "MaxGateWaitSeconds", 600),
        (["--max-attempts", "3"], "MaxAttempts", 3),
        (["--blackout", "01:00-02:00", "--blackout", "22:00-23:00"], "BlackoutWindows", ["01:00-02:00", "22:00-23:00"]),
        (["--no-blackouts"], "BlackoutWindows", []),
        (["--kill-sessions", "false"], "KillSessionsAfterMaxWait", False),
    ]:
        before = policy()
        baton(server, "rotation", "configure", unique_name, *flags)
        after = policy()
        assert after[key] == value, (flags, after)
        assert {k: v for k, v in after.items() if k != key} == {k: v for k, v in before.items() if k != key}, flags
    assert first["PropagationDelaySeconds"] == 120 and first["KillSessionsAfterMaxWait"] is True
    # --reset starts from the defaults.
    baton(server, "rotation", "configure", unique_name, "--reset", "--max-attempts", "4")
    reset = policy()
    assert reset["MaxAttempts"] == 4 and reset["PropagationDelaySeconds"] == 300 and reset["BlackoutWindows"] == []


CRASH_POINTS = [
    "before-save:create",
    "after-save:create",
    "before-save:test",
    "before-save:promote",
    "after-save:promote",
    "before-save:retire",
]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_rotation_survives_sigkill_at_every_step_boundary(fresh, point):
    srv = fresh(extra_env={"BATON_DANGER_TEST_CRASH_AT": point})
    srv.start()
    sm = srv.client()
    old = sm.create_secret(Name="crashy", SecretString='{"user":"u","password":"p0"}')["VersionId"]
    status, _ = awsraw.call(srv, "baton.PutRotationPolicy",
                            {"SecretId": "crashy", "PropagationDelaySeconds": 1, "RetireGraceSeconds": 0})
    assert status == 200
    lam = f"arn:aws:lambda:us-east-1:{srv.account_id}:function:baton-random"
    # The engine takes the first steps at once, so the kill can land before RotateSecret's answer
    # reaches the client: the version id is the token the client chose, answered or not.
    new = str(uuid.uuid4())
    try:
        assert sm.rotate_secret(SecretId="crashy", RotationLambdaARN=lam, ClientRequestToken=new)["VersionId"] == new
    except (botocore.exceptions.ConnectionClosedError, botocore.exceptions.EndpointConnectionError):
        pass
    assert srv.process.wait(timeout=30) == -9, "the hook killed the server with SIGKILL"
    assert "BATON_DANGER_TEST_CRASH_AT is set" in srv.read_log()

    srv.extra_env = {}
    srv.start()
    sm = srv.client()  # no connection of the killed process is reused
    deadline = time.time() + 30
    while describe_rotation(srv, "crashy").get("Status") != "Succeeded":
        assert time.time() < deadline, describe_rotation(srv, "crashy")
        time.sleep(0.1)
    stages = sm.describe_secret(SecretId="crashy")["VersionIdsToStages"]
    assert stages == {new: ["AWSCURRENT"]}, "one current, no pending left, old retired"
    versions = sm.list_secret_version_ids(SecretId="crashy", IncludeDeprecated=True)["Versions"]
    assert sorted(v["VersionId"] for v in versions) == sorted([old, new]), "no duplicate version"
    value = json.loads(sm.get_secret_value(SecretId="crashy")["SecretString"])
    assert value["user"] == "u" and value["password"] != "p0"
    timeline = [e["Event"] for e in describe_rotation(srv, "crashy")["Timeline"]]
    assert timeline.count("phase promoted") == 1, timeline


def test_schedules_set_the_next_rotation_date_inside_their_window(server, sm, unique_name):
    created = sm.create_secret(Name=unique_name, SecretString="x")
    created_at = sm.describe_secret(SecretId=unique_name)["CreatedDate"].timestamp()
    lam = f"arn:aws:lambda:us-east-1:{server.account_id}:function:baton-random"
    sm.rotate_secret(SecretId=unique_name, RotationLambdaARN=lam, RotateImmediately=False,
                     RotationRules={"ScheduleExpression": "rate(6 hours)", "Duration": "2h"})
    next_at = sm.describe_secret(SecretId=unique_name)["NextRotationDate"].timestamp()
    assert created_at + 6 * 3600 - 1 <= next_at < created_at + 8 * 3600 + 1, (created_at, next_at)
    listed = sm.list_secrets(Filters=[{"Key": "name", "Values": [unique_name]}])["SecretList"][0]
    assert listed["NextRotationDate"].timestamp() == next_at
    # cron: 16:00 UTC on the 1st and 15th, a one-hour window.
    sm.rotate_secret(SecretId=unique_name, RotateImmediately=False,
                     RotationRules={"ScheduleExpression": "cron(0 16 1,15 * ? *)", "Duration": "1h"})
    import datetime
    at = sm.describe_secret(SecretId=unique_name)["NextRotationDate"].astimezone(datetime.timezone.utc)
    assert at.day in (1, 15) and at.hour == 16, at
    with pytest.raises(Exception) as e:
        sm.rotate_secret(SecretId=unique_name, RotateImmediately=False,
                         RotationRules={"ScheduleExpression": "cron(0 16 1 * 2 *)"})
    assert "Exactly one of day-of-month and day-of-week" in str(e.value)
    sm.cancel_rotate_secret(SecretId=unique_name)
    assert "NextRotationDate" not in sm.describe_secret(SecretId=unique_name)
    assert created["Name"] == unique_name


def test_an_aws_template_rotation_function_runs_unchanged_as_a_command_rotator(server, sm, unique_name):
    import sys
    from pathlib import Path

    here = Path(__file__).parent
    other = sm.create_secret(Name=unique_name + "/other", SecretString="not yours")["ARN"]
    old = sm.create_secret(Name=unique_name, SecretString="initial-password")["VersionId"]
    # The adapter: Lambda's event becomes standard input; the function itself is unchanged. The
    # operator defines the command in the server's rotators directory.
    code = (f"import json, sys; sys.path.insert(0, '{here}'); import rotation_function as f; "
            f"f.lambda_handler(json.load(sys.stdin), None)")
    rotator = "aws-template-" + unique_name.rsplit("-", 1)[-1]
    server.add_command_rotator(rotator, [sys.executable, "-c", code], env={"ROTATION_TEST_OTHER_SECRET": other})
    listed = json.loads(baton(server, "rotator", "list", "--output", "json").stdout)["Rotators"]
    mine = [r for r in listed if r["Name"] == rotator]
    assert mine and mine[0]["Source"] == "configuration" and mine[0]["Runnable"], listed
    awsraw.call(server, "baton.PutRotationPolicy",
                {"SecretId": unique_name, "PropagationDelaySeconds": 1, "RetireGraceSeconds": 0})
    lam = f"arn:aws:lambda:us-east-1:{server.account_id}:function:{rotator}"
    new = sm.rotate_secret(SecretId=unique_name, RotationLambdaARN=lam)["VersionId"]
    deadline = time.time() + 60
    while (r := describe_rotation(server, unique_name)).get("Status") not in ("Succeeded", "Stopped"):
        assert time.time() < deadline, r
        time.sleep(0.2)
    assert r["Status"] == "Succeeded", r
    value = sm.get_secret_value(SecretId=unique_name)
    assert value["VersionId"] == new and len(value["SecretString"]) == 32
    assert sm.describe_secret(SecretId=unique_name)["VersionIdsToStages"] == {new: ["AWSCURRENT"]}
    # The old value is kept, deprecated, and still readable by its version id.
    assert sm.get_secret_value(SecretId=unique_name, VersionId=old)["SecretString"] == "initial-password"
    # The temporary keys are gone: none is listed, and none is left in the store.
    keys = json.loads(baton(server, "admin", "access-key", "list", "--output", "json").stdout)["AccessKeys"]
    assert all(not k["AccessKeyId"].startswith("BTT") for k in keys)
    # The API cannot delete what the operator defined; removing the file removes the rotator.
    kept = baton(server, "rotator", "delete", rotator, check=False)
    assert kept.returncode == 1 and "the operator removes it there" in kept.stderr
    (server.rotators_dir / f"{rotator}.toml").unlink()
    refused = baton(server, "rotation", "start", unique_name, check=False)
    assert refused.returncode == 1 and rotator in refused.stderr


def test_a_failing_command_rotator_stops_the_rotation_safely(server, sm, unique_name):
    rotator = "always-fails-" + unique_name.rsplit("-", 1)[-1]
    server.add_command_rotator(rotator, ["/bin/sh", "-c", "exit 3"])
    old = sm.create_secret(Name=unique_name, SecretString="keep-me")["VersionId"]
    awsraw.call(server, "baton.PutRotationPolicy", {"SecretId": unique_name, "MaxAttempts": 2})
    lam = f"arn:aws:lambda:us-east-1:{server.account_id}:function:{rotator}"
    sm.rotate_secret(SecretId=unique_name, RotationLambdaARN=lam)
    deadline = time.time() + 30
    while (r := describe_rotation(server, unique_name)).get("Status") != "Stopped":
        assert time.time() < deadline, r
        time.sleep(0.2)
    assert "createSecret" in r["StatusReason"] and "exit status: 3" in r["StatusReason"], r
    assert sm.get_secret_value(SecretId=unique_name)["SecretString"] == "keep-me"
    assert sm.get_secret_value(SecretId=unique_name)["VersionId"] == old


def wait_for_rotation(srv, name, timeout=60):
    deadline = time.time() + timeout
    while (r := describe_rotation(srv, name)).get("Status") not in ("Succeeded", "Stopped"):
        assert time.time() < deadline, r
        time.sleep(0.2)
    return r


@pytest.fixture
def webhook(tmp_path):
    """A running webhook_receiver.py: (url, secret file, log reader)."""
    import subprocess
    import sys
    from pathlib import Path

    secret_file, log_file = tmp_path / "signing-secret", tmp_path / "webhook.log"
    secret_file.write_text("not yet registered")
    log_file.write_text("")
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "webhook_receiver.py"), str(secret_file), str(log_file)],
        stdout=subprocess.PIPE, text=True,
    )
    port = int(proc.stdout.readline())

    def log():
        return [json.loads(line) for line in log_file.read_text().splitlines()]

    yield f"http://127.0.0.1:{port}/rotate", secret_file, log
    proc.kill()
    proc.wait()


def test_a_webhook_rotator_completes_a_rotation_with_signed_requests(server, sm, unique_name, webhook):
    url, secret_file, log = webhook
    rotator = "hook-" + unique_name.rsplit("-", 1)[-1]
    created = json.loads(baton(server, "rotator", "create", rotator, "--webhook", url, "--output", "json").stdout)
    assert created["WebhookUrl"] == url and created["TimeoutSeconds"] == 30
    assert created["SigningSecret"].startswith("bws_") and len(created["SigningSecret"]) == 68
    secret_file.write_text(created["SigningSecret"])
    # The signing secret is shown once: listing never returns it.
    listed = json.loads(baton(server, "rotator", "list", "--output", "json").stdout)["Rotators"]
    mine = [r for r in listed if r["Name"] == rotator]
    assert mine and "SigningSecret" not in mine[0] and mine[0]["WebhookUrl"] == url

    old = sm.create_secret(Name=unique_name, SecretString="initial-password")["VersionId"]
    awsraw.call(server, "baton.PutRotationPolicy",
                {"SecretId": unique_name, "PropagationDelaySeconds": 1, "RetireGraceSeconds": 0})
    lam = f"arn:aws:lambda:us-east-1:{server.account_id}:function:{rotator}"
    new = sm.rotate_secret(SecretId=unique_name, RotationLambdaARN=lam)["VersionId"]
    r = wait_for_rotation(server, unique_name)
    assert r["Status"] == "Succeeded", r
    assert [e["step"] for e in log()] == ["createSecret", "setSecret", "testSecret", "finishSecret"]
    assert all(e["outcome"] == "ok" for e in log()), log()
    value = sm.get_secret_value(SecretId=unique_name)
    assert value["VersionId"] == new and len(value["SecretString"]) == 32
    assert sm.get_secret_value(SecretId=unique_name, VersionId=old)["SecretString"] == "initial-password"
    keys = json.loads(baton(server, "admin", "access-key", "list", "--output", "json").stdout)["AccessKeys"]
    assert all(not k["AccessKeyId"].startswith("BTT") for k in keys)


def test_a_webhook_that_refuses_the_signature_stops_the_rotation_safely(server, sm, unique_name, webhook):
    url, secret_file, log = webhook
    rotator = "hook-bad-" + unique_name.rsplit("-", 1)[-1]
    baton(server, "rotator", "create", rotator, "--webhook", url, "--timeout-seconds", "5")
    secret_file.write_text("bws_" + "0" * 64)  # not the secret Baton signs with
    old = sm.create_secret(Name=unique_name, SecretString="keep-me")["VersionId"]
    awsraw.call(server, "baton.PutRotationPolicy", {"SecretId": unique_name, "MaxAttempts": 2})
    sm.rotate_secret(SecretId=unique_name,
                     RotationLambdaARN=f"arn:aws:lambda:us-east-1:{server.account_id}:function:{rotator}")
    r = wait_for_rotation(server, unique_name)
    assert r["Status"] == "Stopped", r
    # The receiver answered, so callers see its status (and the end of its answer, redacted);
    # connection and address failures say only that the call failed (test_security.py).
    assert "createSecret step's webhook answered HTTP 401" in r["StatusReason"], r
    assert {e["outcome"] for e in log()} == {"bad-signature"}
    value = sm.get_secret_value(SecretId=unique_name)
    assert value["SecretString"] == "keep-me" and value["VersionId"] == old


@pytest.mark.parametrize("args, message", [
    (["--webhook", "http://rotator.example/rotate"], "plain http is allowed only to a loopback address"),
    (["--webhook", "https://user:pw@rotator.example/"], "must not contain user information"),
    (["--webhook", "ftp://rotator.example/"], "not an absolute http(s) URL"),
    (["--webhook", "https://rotator.example/", "--timeout-seconds", "901"], "between 1 and 900"),
])
def test_webhook_rotators_are_validated(server, unique_name, args, message):
    r = baton(server, "rotator", "create", "v-" + unique_name.rsplit("-", 1)[-1], *args, check=False)
    assert r.returncode == 1 and message in r.stderr, r.stderr


def test_a_rotator_is_a_command_or_a_webhook_not_both(server, unique_name):
    status, body = awsraw.call(server, "baton.CreateRotator", {
        "Name": "both-" + unique_name.rsplit("-", 1)[-1], "Command": "true", "WebhookUrl": "https://x.example/"})
    assert status == 400 and body["__type"] == "InvalidParameterException", body
    assert "exactly one of Command and WebhookUrl" in body["Message"]


def test_the_keypair_rotator_generates_a_key_pair_whose_jwk_names_its_version(server, sm, unique_name):
    sm.create_secret(Name=unique_name, SecretString=json.dumps({"key_type": "ECC_NIST_P256", "issuer": "auth"}))
    awsraw.call(server, "baton.PutRotationPolicy",
                {"SecretId": unique_name, "PropagationDelaySeconds": 1, "RetireGraceSeconds": 0})
    lam = f"arn:aws:lambda:us-east-1:{server.account_id}:function:baton-keypair"
    new = sm.rotate_secret(SecretId=unique_name, RotationLambdaARN=lam)["VersionId"]
    r = wait_for_rotation(server, unique_name)
    assert r["Status"] == "Succeeded", r
    value = sm.get_secret_value(SecretId=unique_name)
    assert value["VersionId"] == new
    doc = json.loads(value["SecretString"])
    assert doc["issuer"] == "auth" and doc["key_type"] == "ECC_NIST_P256"
    assert doc["private_key_pem"].startswith("-----BEGIN PRIVATE KEY-----\n")
    assert doc["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----\n")
    jwk = doc["public_jwk"]
    assert jwk == {**jwk, "kty": "EC", "crv": "P-256", "kid": new, "alg": "ES256", "use": "sig"}
    assert "d" not in jwk  # the JWK is public only
    # A second rotation makes a different key, whose kid is the next version.
    new2 = sm.rotate_secret(SecretId=unique_name)["VersionId"]
    assert wait_for_rotation(server, unique_name)["Status"] == "Succeeded"
    doc2 = json.loads(sm.get_secret_value(SecretId=unique_name)["SecretString"])
    assert doc2["public_jwk"]["kid"] == new2 and doc2["public_jwk"]["x"] != jwk["x"]


def test_the_keypair_rotator_refuses_an_unknown_key_type_and_keeps_the_value(server, sm, unique_name):
    original = json.dumps({"key_type": "DSA_1024"})
    sm.create_secret(Name=unique_name, SecretString=original)
    awsraw.call(server, "baton.PutRotationPolicy", {"SecretId": unique_name, "MaxAttempts": 1})
    sm.rotate_secret(SecretId=unique_name,
                     RotationLambdaARN=f"arn:aws:lambda:us-east-1:{server.account_id}:function:baton-keypair")
    r = wait_for_rotation(server, unique_name)
    assert r["Status"] == "Stopped" and "DSA_1024" in r["StatusReason"], r
    assert sm.get_secret_value(SecretId=unique_name)["SecretString"] == original


def test_a_failed_command_step_says_why_with_its_secrets_hidden(server, sm, unique_name):
    import sys

    value = '{"username":"app","password":"pw-visible-nowhere-42"}'
    sm.create_secret(Name=unique_name, SecretString=value)
    # An AWS-style function that fails loudly: it prints the secret it read, then the reason.
    script = ("import os, sys, json, boto3; "
              "sm = boto3.client('secretsmanager'); "
              "v = sm.get_secret_value(SecretId=json.load(sys.stdin)['SecretId'])['SecretString']; "
              "print('debug: read ' + v, file=sys.stderr); "
              "print('password is ' + json.loads(v)['password'], file=sys.stderr); "
              "print('key ' + os.environ['AWS_SECRET_ACCESS_KEY'], file=sys.stderr); "
              "print('psycopg2.OperationalError: could not connect to server: Connection refused', file=sys.stderr); "
              "sys.exit(1)")
    rotator = "loud-" + unique_name.rsplit("-", 1)[-1]
    server.add_command_rotator(rotator, [sys.executable, "-c", script])
    awsraw.call(server, "baton.PutRotationPolicy", {"SecretId": unique_name, "MaxAttempts": 1})
    lam = f"arn:aws:lambda:us-east-1:{server.account_id}:function:{rotator}"
    sm.rotate_secret(SecretId=unique_name, RotationLambdaARN=lam)
    deadline = time.time() + 60
    while (r := describe_rotation(server, unique_name)).get("Status") != "Stopped":
        assert time.time() < deadline, r
        time.sleep(0.2)
    reason = r["StatusReason"]
    assert "failed its createSecret step" in reason and "its output ended with:" in reason, reason
    assert "could not connect to server: Connection refused" in reason, reason
    assert "pw-visible-nowhere-42" not in reason and "password is [REDACTED]" in reason, reason
    timeline = " ".join(e["Event"] for e in r["Timeline"])
    assert "Connection refused" in timeline and "pw-visible-nowhere-42" not in timeline
    status = baton(server, "rotation", "status", unique_name).stdout
    assert "Connection refused" in status and "pw-visible-nowhere-42" not in status, status
