"""The event log: every change is recorded in the transaction that makes it, in the shape of
AWS's EventBridge events for Secrets Manager, without values, and is readable with
baton.ListEvents and `baton events tail`."""

import json
import time

import awsraw
from test_cli import baton

VALUE = "event-log-radioactive-value-7d1f"


def events_of(server, secret_id, after=None):
    body = {"SecretId": secret_id}
    if after:
        body["NextToken"] = after
    status, page = awsraw.call(server, "baton.ListEvents", body)
    assert status == 200, page
    return page["Events"], page["NextToken"]


def names(events):
    return [e["detail"]["eventName"] for e in events]


def test_every_change_is_an_eventbridge_event_without_values(server, sm, unique_name):
    created = sm.create_secret(Name=unique_name, SecretString=VALUE)
    arn = created["ARN"]
    sm.get_secret_value(SecretId=unique_name)  # a read is not a change
    v2 = sm.put_secret_value(SecretId=unique_name, SecretString=VALUE + "-2")["VersionId"]
    sm.update_secret(SecretId=unique_name, Description="described")
    sm.update_secret_version_stage(SecretId=unique_name, VersionStage="BLUE", MoveToVersionId=v2)
    sm.tag_resource(SecretId=unique_name, Tags=[{"Key": "team", "Value": "a"}])
    sm.delete_secret(SecretId=unique_name, RecoveryWindowInDays=7)
    sm.restore_secret(SecretId=unique_name)
    events, token = events_of(server, unique_name)
    assert names(events) == ["CreateSecret", "PutSecretValue", "UpdateSecret", "UpdateSecretVersionStage",
                             "TagResource", "DeleteSecret", "RestoreSecret"]
    put = events[1]
    assert put["source"] == "aws.secretsmanager" and put["detail-type"] == "AWS API Call via CloudTrail"
    assert put["resources"] == [arn] and put["account"] == server.account_id and put["region"] == "us-east-1"
    assert put["time"].endswith("Z") and put["detail"]["eventSource"] == "secretsmanager.amazonaws.com"
    assert put["detail"]["requestParameters"] == {"secretId": arn}
    assert put["detail"]["additionalEventData"]["versionIdsToStages"][v2] == ["AWSCURRENT"]
    assert all(VALUE not in json.dumps(e) for e in events), "values never appear"
    seqs = [e["detail"]["baton"]["seq"] for e in events]
    assert seqs == sorted(seqs) and token == str(seqs[-1])
    # Nothing new after the token.
    assert events_of(server, unique_name, token)[0] == []
    # A forced deletion is recorded, and the events stay readable by ARN afterwards.
    sm.delete_secret(SecretId=unique_name, ForceDeleteWithoutRecovery=True)
    after, _ = events_of(server, arn, token)
    assert names(after) == ["DeleteSecret"]


def test_a_rotation_records_its_phases_in_order(server, sm, unique_name):
    sm.create_secret(Name=unique_name, SecretString="first")
    awsraw.call(server, "baton.PutRotationPolicy", {"SecretId": unique_name, "PropagationDelaySeconds": 1,
                                                    "RetireGraceSeconds": 0})
    _, start = events_of(server, unique_name)
    sm.rotate_secret(SecretId=unique_name,
                     RotationLambdaARN=f"arn:aws:lambda:us-east-1:{server.account_id}:function:baton-random")
    deadline = time.time() + 30
    while awsraw.call(server, "baton.DescribeRotation", {"SecretId": unique_name})[1].get("Status") != "Succeeded":
        assert time.time() < deadline
        time.sleep(0.1)
    events, _ = events_of(server, unique_name, start)
    got = names(events)
    assert got[:2] == ["RotateSecret", "RotationStarted"], got
    assert got[-1] == "RotationSucceeded", got
    phases = [e["detail"]["additionalEventData"]["phase"] for e in events if e["detail"]["eventName"] == "RotationPhaseReached"]
    assert phases == ["created", "set", "tested", "propagated", "promoted", "drained", "retired"], phases
    assert got.count("RotationGatePassed") == 2
    rotation_events = [e for e in events if e["detail"]["eventName"].startswith("Rotation")]
    assert all(e["detail-type"] == "AWS Service Event via CloudTrail" for e in rotation_events)


def test_events_tail_prints_lines_and_json_and_pages_are_validated(server, sm, unique_name):
    sm.create_secret(Name=unique_name, SecretString="x")
    sm.put_secret_value(SecretId=unique_name, SecretString="y")
    lines = baton(server, "events", "tail", "--secret-id", unique_name).stdout.strip().splitlines()
    assert [l.split()[1] for l in lines] == ["CreateSecret", "PutSecretValue"], lines
    assert all(unique_name in l for l in lines)
    as_json = baton(server, "events", "tail", "--secret-id", unique_name, "--output", "json").stdout.splitlines()
    assert [json.loads(l)["detail"]["eventName"] for l in as_json] == ["CreateSecret", "PutSecretValue"]
    status, body = awsraw.call(server, "baton.ListEvents", {"MaxResults": 0})
    assert status == 400 and awsraw.error_of(body)[0] == "InvalidParameterException", body
    status, body = awsraw.call(server, "baton.ListEvents", {"NextToken": "not-a-token"})
    assert status == 400 and awsraw.error_of(body)[0] == "InvalidNextTokenException", body
    # Another account's caller would not see these: every event carries this account.
    status, page = awsraw.call(server, "baton.ListEvents", {"MaxResults": 5})
    assert status == 200 and all(e["account"] == server.account_id for e in page["Events"])
