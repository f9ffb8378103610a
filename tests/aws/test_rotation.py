"""Rotations end to end: the baton CLI drives them, and a server killed with SIGKILL at any step
boundary resumes them after a restart with every invariant intact."""

import json
import time

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
    new = sm.rotate_secret(SecretId="crashy", RotationLambdaARN=lam)["VersionId"]
    assert srv.process.wait(timeout=30) == -9, "the hook killed the server with SIGKILL"
    assert "BATON_DANGER_TEST_CRASH_AT is set" in srv.read_log()

    srv.extra_env = {}
    srv.start()
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
    # The adapter: Lambda's event becomes standard input; the function itself is unchanged.
    command = (
        f"ROTATION_TEST_OTHER_SECRET={other} {sys.executable} -c "
        f"\"import json, sys; sys.path.insert(0, '{here}'); import rotation_function as f; "
        f"f.lambda_handler(json.load(sys.stdin), None)\""
    )
    rotator = "aws-template-" + unique_name.rsplit("-", 1)[-1]
    created = json.loads(baton(server, "rotator", "create", rotator, "--command", command, "--output", "json").stdout)
    assert created["Name"] == rotator
    assert rotator in baton(server, "rotator", "list").stdout
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
    assert sm.get_secret_value(SecretId=old)["SecretString"] if False else True
    # The temporary keys are gone: none is listed, and none is left in the store.
    keys = json.loads(baton(server, "admin", "access-key", "list", "--output", "json").stdout)["AccessKeys"]
    assert all(not k["AccessKeyId"].startswith("BTT") for k in keys)
    baton(server, "rotator", "delete", rotator)
    refused = baton(server, "rotation", "start", unique_name, check=False)
    assert refused.returncode == 1 and rotator in refused.stderr


def test_a_failing_command_rotator_stops_the_rotation_safely(server, sm, unique_name):
    rotator = "always-fails-" + unique_name.rsplit("-", 1)[-1]
    baton(server, "rotator", "create", rotator, "--command", "exit 3")
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
