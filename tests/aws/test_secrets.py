"""Secrets Manager operations through boto3 against a running `baton serve`, on every engine."""

import base64
import json
import re
import time
import uuid

import pytest
from botocore.exceptions import ClientError

import awsraw


def aws_error(excinfo):
    e = excinfo.value.response
    return e["Error"]["Code"], e["Error"]["Message"], e["ResponseMetadata"]["HTTPStatusCode"]


def stages(sm, secret_id):
    return sm.describe_secret(SecretId=secret_id)["VersionIdsToStages"]


def test_create_and_read_back_by_name_arn_and_partial_arn(sm, unique_name, server):
    created = sm.create_secret(Name=unique_name, SecretString="s3cret", Description="db password")
    assert created["Name"] == unique_name
    assert re.fullmatch(
        rf"arn:aws:secretsmanager:us-east-1:{server.account_id}:secret:{re.escape(unique_name)}-[A-Za-z0-9]{{6}}",
        created["ARN"],
    )
    for secret_id in (unique_name, created["ARN"], created["ARN"][:-7]):
        value = sm.get_secret_value(SecretId=secret_id)
        assert value["SecretString"] == "s3cret"
        assert value["VersionId"] == created["VersionId"]
        assert value["VersionStages"] == ["AWSCURRENT"]
        assert value["ARN"] == created["ARN"]


def test_binary_values_round_trip_byte_for_byte(sm, unique_name):
    data = bytes(range(256)) * 4
    sm.create_secret(Name=unique_name, SecretBinary=data)
    value = sm.get_secret_value(SecretId=unique_name)
    assert value["SecretBinary"] == data
    assert "SecretString" not in value


def test_secret_without_value_has_no_version_until_one_is_put(sm, unique_name):
    created = sm.create_secret(Name=unique_name)
    assert "VersionId" not in created
    with pytest.raises(ClientError) as e:
        sm.get_secret_value(SecretId=unique_name)
    assert aws_error(e) == (
        "ResourceNotFoundException",
        "Secrets Manager can't find the specified secret value for staging label: AWSCURRENT",
        400,
    )
    put = sm.put_secret_value(SecretId=unique_name, SecretString="first", VersionStages=["AWSPENDING"])
    # The first version always becomes current.
    assert sorted(put["VersionStages"]) == ["AWSCURRENT", "AWSPENDING"]


def test_put_moves_current_and_previous(sm, unique_name):
    v1 = sm.create_secret(Name=unique_name, SecretString="one")["VersionId"]
    v2 = sm.put_secret_value(SecretId=unique_name, SecretString="two")["VersionId"]
    assert stages(sm, unique_name) == {v1: ["AWSPREVIOUS"], v2: ["AWSCURRENT"]}
    v3 = sm.put_secret_value(SecretId=unique_name, SecretString="three")["VersionId"]
    assert stages(sm, unique_name) == {v2: ["AWSPREVIOUS"], v3: ["AWSCURRENT"]}
    assert sm.get_secret_value(SecretId=unique_name, VersionStage="AWSPREVIOUS")["SecretString"] == "two"
    assert sm.get_secret_value(SecretId=unique_name, VersionId=v1)["SecretString"] == "one"
    listed = sm.list_secret_version_ids(SecretId=unique_name)["Versions"]
    assert {v["VersionId"] for v in listed} == {v2, v3}
    listed = sm.list_secret_version_ids(SecretId=unique_name, IncludeDeprecated=True)["Versions"]
    assert {v["VersionId"] for v in listed} == {v1, v2, v3}


def test_pending_value_does_not_disturb_current(sm, unique_name):
    v1 = sm.create_secret(Name=unique_name, SecretString="old")["VersionId"]
    v2 = sm.put_secret_value(SecretId=unique_name, SecretString="new", VersionStages=["AWSPENDING"])["VersionId"]
    assert sm.get_secret_value(SecretId=unique_name)["SecretString"] == "old"
    assert sm.get_secret_value(SecretId=unique_name, VersionStage="AWSPENDING")["VersionId"] == v2
    assert stages(sm, unique_name) == {v1: ["AWSCURRENT"], v2: ["AWSPENDING"]}


def test_client_request_token_makes_puts_idempotent(sm, unique_name):
    sm.create_secret(Name=unique_name, SecretString="a")
    token = str(uuid.uuid4())
    first = sm.put_secret_value(SecretId=unique_name, SecretString="b", ClientRequestToken=token)
    again = sm.put_secret_value(SecretId=unique_name, SecretString="b", ClientRequestToken=token)
    assert first["VersionId"] == again["VersionId"] == token
    assert len(sm.list_secret_version_ids(SecretId=unique_name)["Versions"]) == 2
    with pytest.raises(ClientError) as e:
        sm.put_secret_value(SecretId=unique_name, SecretString="different", ClientRequestToken=token)
    arn = sm.describe_secret(SecretId=unique_name)["ARN"]
    assert aws_error(e) == (
        "ResourceExistsException",
        f"You can't use ClientRequestToken {token} because that value is already in use for a version of secret {arn}.",
        400,
    )
    assert sm.get_secret_value(SecretId=unique_name)["SecretString"] == "b"


def test_create_is_idempotent_per_token_and_refuses_duplicates(sm, unique_name):
    token = str(uuid.uuid4())
    first = sm.create_secret(Name=unique_name, SecretString="x", ClientRequestToken=token)
    retry = sm.create_secret(Name=unique_name, SecretString="x", ClientRequestToken=token)
    assert retry["ARN"] == first["ARN"] and retry["VersionId"] == token
    with pytest.raises(ClientError) as e:
        sm.create_secret(Name=unique_name, SecretString="x")
    assert aws_error(e) == (
        "ResourceExistsException",
        f"The operation failed because the secret {unique_name} already exists.",
        400,
    )


def test_invalid_names_and_values_are_refused(sm, unique_name):
    with pytest.raises(ClientError) as e:
        sm.create_secret(Name="has space", SecretString="x")
    code, message, status = aws_error(e)
    assert (code, status) == ("InvalidParameterException", 400)
    assert "Invalid name" in message
    with pytest.raises(ClientError) as e:
        sm.create_secret(Name="a" * 513, SecretString="x")
    assert aws_error(e)[0] == "ValidationException"
    with pytest.raises(ClientError) as e:
        sm.create_secret(Name=unique_name, SecretString="x" * 65537)
    code, message, _ = aws_error(e)
    assert code == "ValidationException" and "65536" in message
    with pytest.raises(ClientError) as e:
        sm.create_secret(Name=unique_name, SecretString="x", SecretBinary=b"y")
    assert aws_error(e)[0] == "InvalidParameterException"
    # Nothing was half-written by the refused calls.
    with pytest.raises(ClientError) as e:
        sm.describe_secret(SecretId=unique_name)
    assert aws_error(e)[0] == "ResourceNotFoundException"
    sm.create_secret(Name=unique_name, SecretString="x" * 65536)


def test_update_secret_changes_metadata_and_adds_a_current_version(sm, unique_name):
    v1 = sm.create_secret(Name=unique_name, SecretString="one")["VersionId"]
    r = sm.update_secret(SecretId=unique_name, Description="new description")
    assert "VersionId" not in r
    r = sm.update_secret(SecretId=unique_name, SecretString="two")
    assert stages(sm, unique_name) == {v1: ["AWSPREVIOUS"], r["VersionId"]: ["AWSCURRENT"]}
    d = sm.describe_secret(SecretId=unique_name)
    assert d["Description"] == "new description"


def test_update_secret_version_stage_follows_aws_rules(sm, unique_name):
    v1 = sm.create_secret(Name=unique_name, SecretString="one")["VersionId"]
    v2 = sm.put_secret_value(SecretId=unique_name, SecretString="two", VersionStages=["AWSPENDING"])["VersionId"]
    with pytest.raises(ClientError) as e:
        sm.update_secret_version_stage(SecretId=unique_name, VersionStage="AWSCURRENT", MoveToVersionId=v2)
    code, message, _ = aws_error(e)
    assert code == "InvalidParameterException" and v1 in message
    sm.update_secret_version_stage(
        SecretId=unique_name, VersionStage="AWSCURRENT", MoveToVersionId=v2, RemoveFromVersionId=v1
    )
    assert stages(sm, unique_name) == {v1: ["AWSPREVIOUS"], v2: ["AWSCURRENT", "AWSPENDING"]}
    sm.update_secret_version_stage(SecretId=unique_name, VersionStage="blue", MoveToVersionId=v1)
    sm.update_secret_version_stage(SecretId=unique_name, VersionStage="AWSPENDING", RemoveFromVersionId=v2)
    assert stages(sm, unique_name) == {v1: ["AWSPREVIOUS", "blue"], v2: ["AWSCURRENT"]}
    with pytest.raises(ClientError) as e:
        sm.update_secret_version_stage(SecretId=unique_name, VersionStage="AWSCURRENT", RemoveFromVersionId=v2)
    assert aws_error(e)[0] == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        sm.update_secret_version_stage(SecretId=unique_name, VersionStage="x", MoveToVersionId=str(uuid.uuid4()))
    assert aws_error(e)[0] == "ResourceNotFoundException"


def test_a_secret_holds_at_most_20_labels(sm, unique_name):
    sm.create_secret(Name=unique_name, SecretString="x")
    # 18 custom labels and AWSCURRENT on the new version, AWSPREVIOUS on the old: 20 in all.
    labels = [f"L{i}" for i in range(18)]
    v2 = sm.put_secret_value(SecretId=unique_name, SecretString="y", VersionStages=["AWSCURRENT"] + labels)["VersionId"]
    with pytest.raises(ClientError) as e:
        sm.put_secret_value(SecretId=unique_name, SecretString="z", VersionStages=["one-too-many"])
    assert aws_error(e)[0] == "LimitExceededException"
    assert len(sm.list_secret_version_ids(SecretId=unique_name, IncludeDeprecated=True)["Versions"]) == 2
    assert sm.get_secret_value(SecretId=unique_name)["VersionId"] == v2


def test_baton_moves_several_labels_in_one_atomic_change(server, sm, unique_name):
    v1 = sm.create_secret(Name=unique_name, SecretString="old")["VersionId"]
    v2 = sm.put_secret_value(SecretId=unique_name, SecretString="new", VersionStages=["AWSPENDING"])["VersionId"]
    bad = [
        {"VersionStage": "AWSCURRENT", "RemoveFromVersionId": v1, "MoveToVersionId": v2},
        {"VersionStage": "AWSPENDING", "RemoveFromVersionId": v1},
    ]
    status, body = awsraw.call(server, "baton.UpdateSecretVersionStages", {"SecretId": unique_name, "Moves": bad})
    assert status == 400 and body["__type"] == "InvalidParameterException"
    assert stages(sm, unique_name) == {v1: ["AWSCURRENT"], v2: ["AWSPENDING"]}, "nothing applied"
    good = [
        {"VersionStage": "AWSCURRENT", "RemoveFromVersionId": v1, "MoveToVersionId": v2},
        {"VersionStage": "AWSPENDING", "RemoveFromVersionId": v2},
    ]
    status, body = awsraw.call(server, "baton.UpdateSecretVersionStages", {"SecretId": unique_name, "Moves": good})
    assert status == 200, body
    assert body["VersionIdsToStages"] == {v1: ["AWSPREVIOUS"], v2: ["AWSCURRENT"]}


def test_version_lookups_name_what_was_not_found(sm, unique_name):
    v1 = sm.create_secret(Name=unique_name, SecretString="x")["VersionId"]
    missing = str(uuid.uuid4())
    with pytest.raises(ClientError) as e:
        sm.get_secret_value(SecretId=unique_name, VersionId=missing)
    assert aws_error(e)[1] == f"Secrets Manager can't find the specified secret value for VersionId: {missing}"
    with pytest.raises(ClientError) as e:
        sm.get_secret_value(SecretId=unique_name, VersionId=v1, VersionStage="AWSPREVIOUS")
    assert aws_error(e)[0] == "InvalidRequestException"
    with pytest.raises(ClientError) as e:
        sm.get_secret_value(SecretId="no/such/secret")
    assert aws_error(e) == ("ResourceNotFoundException", "Secrets Manager can't find the specified secret.", 400)


def test_delete_restore_and_recreate(sm, unique_name):
    sm.create_secret(Name=unique_name, SecretString="x")
    before = time.time()
    deleted = sm.delete_secret(SecretId=unique_name, RecoveryWindowInDays=7)
    assert abs(deleted["DeletionDate"].timestamp() - (before + 7 * 86400)) < 60
    with pytest.raises(ClientError) as e:
        sm.get_secret_value(SecretId=unique_name)
    assert aws_error(e) == (
        "InvalidRequestException",
        "You can't perform this operation on the secret because it was marked for deletion.",
        400,
    )
    assert "DeletedDate" in sm.describe_secret(SecretId=unique_name)
    with pytest.raises(ClientError) as e:
        sm.create_secret(Name=unique_name, SecretString="y")
    code, message, _ = aws_error(e)
    assert code == "InvalidRequestException"
    assert "scheduled for deletion" in message and "RestoreSecret" in message and "ForceDeleteWithoutRecovery" in message
    sm.restore_secret(SecretId=unique_name)
    assert sm.get_secret_value(SecretId=unique_name)["SecretString"] == "x"
    sm.delete_secret(SecretId=unique_name)
    sm.delete_secret(SecretId=unique_name, ForceDeleteWithoutRecovery=True)
    with pytest.raises(ClientError) as e:
        sm.describe_secret(SecretId=unique_name)
    assert aws_error(e)[0] == "ResourceNotFoundException"
    sm.create_secret(Name=unique_name, SecretString="again")


def test_delete_validates_the_recovery_window(sm, unique_name):
    sm.create_secret(Name=unique_name, SecretString="x")
    for days in (6, 31):
        with pytest.raises(ClientError) as e:
            sm.delete_secret(SecretId=unique_name, RecoveryWindowInDays=days)
        assert aws_error(e)[0] == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        sm.delete_secret(SecretId=unique_name, RecoveryWindowInDays=7, ForceDeleteWithoutRecovery=True)
    assert aws_error(e)[0] == "InvalidParameterException"
    assert sm.get_secret_value(SecretId=unique_name)["SecretString"] == "x"


def test_list_secrets_filters_sorts_and_pages(sm, unique_name):
    prefix = unique_name + "/list"
    for i in range(5):
        sm.create_secret(Name=f"{prefix}/{i}", SecretString="x", Tags=[{"Key": "idx", "Value": str(i)}],
                         Description="even" if i % 2 == 0 else "odd")
    sm.delete_secret(SecretId=f"{prefix}/4")
    by_name = [{"Key": "name", "Values": [prefix]}]
    names = [s["Name"] for s in sm.list_secrets(Filters=by_name)["SecretList"]]
    assert names == [f"{prefix}/{i}" for i in range(4)]
    names = [s["Name"] for s in sm.list_secrets(Filters=by_name, IncludePlannedDeletion=True, SortOrder="desc")["SecretList"]]
    assert names == [f"{prefix}/{i}" for i in reversed(range(5))]
    page = sm.list_secrets(Filters=by_name, MaxResults=3)
    assert len(page["SecretList"]) == 3 and "NextToken" in page
    rest = sm.list_secrets(Filters=by_name, MaxResults=3, NextToken=page["NextToken"])
    assert [s["Name"] for s in rest["SecretList"]] == [f"{prefix}/3"] and "NextToken" not in rest
    paged = [s["Name"] for p in sm.get_paginator("list_secrets").paginate(Filters=by_name, PaginationConfig={"PageSize": 2}) for s in p["SecretList"]]
    assert paged == [f"{prefix}/{i}" for i in range(4)]
    evens = sm.list_secrets(Filters=by_name + [{"Key": "description", "Values": ["even"]}])["SecretList"]
    assert [s["Name"] for s in evens] == [f"{prefix}/0", f"{prefix}/2"]
    not_even = sm.list_secrets(Filters=by_name + [{"Key": "description", "Values": ["!even"]}])["SecretList"]
    assert [s["Name"] for s in not_even] == [f"{prefix}/1", f"{prefix}/3"]
    tagged = sm.list_secrets(Filters=by_name + [{"Key": "tag-value", "Values": ["3"]}])["SecretList"]
    assert [s["Name"] for s in tagged] == [f"{prefix}/3"]
    with pytest.raises(ClientError) as e:
        sm.list_secrets(NextToken="garbage")
    assert aws_error(e)[0] == "InvalidNextTokenException"


def test_tags_are_added_overwritten_and_removed(sm, unique_name):
    sm.create_secret(Name=unique_name, SecretString="x", Tags=[{"Key": "a", "Value": "1"}])
    sm.tag_resource(SecretId=unique_name, Tags=[{"Key": "a", "Value": "2"}, {"Key": "b", "Value": "3"}])
    assert sm.describe_secret(SecretId=unique_name)["Tags"] == [{"Key": "a", "Value": "2"}, {"Key": "b", "Value": "3"}]
    sm.untag_resource(SecretId=unique_name, TagKeys=["a"])
    assert sm.describe_secret(SecretId=unique_name)["Tags"] == [{"Key": "b", "Value": "3"}]
    with pytest.raises(ClientError) as e:
        sm.tag_resource(SecretId=unique_name, Tags=[{"Key": "aws:reserved", "Value": "x"}])
    assert aws_error(e)[0] == "InvalidParameterException"


def test_get_random_password_honours_options(sm):
    assert len(sm.get_random_password()["RandomPassword"]) == 32
    p = sm.get_random_password(PasswordLength=64, ExcludePunctuation=True, ExcludeCharacters="abc")["RandomPassword"]
    assert len(p) == 64 and p.isalnum() and not set("abc") & set(p)
    with pytest.raises(ClientError) as e:
        sm.get_random_password(PasswordLength=4097)
    assert aws_error(e)[0] == "ValidationException"
    with pytest.raises(ClientError) as e:
        sm.get_random_password(ExcludeLowercase=True, ExcludeUppercase=True, ExcludeNumbers=True, ExcludePunctuation=True)
    assert aws_error(e)[0] == "InvalidParameterException"


POLICY = """{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"secretsmanager:GetSecretValue","Resource":"*"}]}"""
PUBLIC = """{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"secretsmanager:*","Resource":"*"}]}"""


def test_resource_policies_are_validated_and_stored(sm, unique_name):
    sm.create_secret(Name=unique_name, SecretString="x")
    assert "ResourcePolicy" not in sm.get_resource_policy(SecretId=unique_name)
    sm.put_resource_policy(SecretId=unique_name, ResourcePolicy=POLICY)
    assert sm.get_resource_policy(SecretId=unique_name)["ResourcePolicy"] == POLICY
    with pytest.raises(ClientError) as e:
        sm.put_resource_policy(SecretId=unique_name, ResourcePolicy="{not json")
    assert aws_error(e)[0] == "MalformedPolicyDocumentException"
    with pytest.raises(ClientError) as e:
        sm.put_resource_policy(SecretId=unique_name, ResourcePolicy=PUBLIC, BlockPublicPolicy=True)
    assert aws_error(e)[0] == "PublicPolicyException"
    assert sm.get_resource_policy(SecretId=unique_name)["ResourcePolicy"] == POLICY
    ok = sm.validate_resource_policy(ResourcePolicy=POLICY)
    assert ok["PolicyValidationPassed"] is True and ok["ValidationErrors"] == []
    bad = sm.validate_resource_policy(ResourcePolicy='{"Statement":[{"Effect":"Allow","Action":"s3:GetObject"}]}')
    assert bad["PolicyValidationPassed"] is False
    assert any("s3:GetObject" in f["ErrorMessage"] for f in bad["ValidationErrors"])
    public = sm.validate_resource_policy(ResourcePolicy=PUBLIC)
    assert [f["CheckName"] for f in public["ValidationErrors"]] == ["BROAD_ACCESS_CHECK"]
    sm.delete_resource_policy(SecretId=unique_name)
    assert "ResourcePolicy" not in sm.get_resource_policy(SecretId=unique_name)


def test_rotate_secret_without_rotating_records_the_configuration(sm, unique_name, server):
    v1 = sm.create_secret(Name=unique_name, SecretString="x")["VersionId"]
    with pytest.raises(ClientError) as e:
        sm.rotate_secret(SecretId=unique_name)
    assert aws_error(e) == ("InvalidRequestException", "No Lambda rotation function ARN is associated with this secret.", 400)
    lam = f"arn:aws:lambda:us-east-1:{server.account_id}:function:my-own-rotator"
    with pytest.raises(ClientError) as e:
        sm.rotate_secret(SecretId=unique_name, RotationLambdaARN=lam)
    code, message, _ = aws_error(e)
    assert code == "InvalidRequestException" and "my-own-rotator" in message and "RotateImmediately" in message
    assert "RotationEnabled" not in sm.describe_secret(SecretId=unique_name), "the refusal wrote nothing"
    r = sm.rotate_secret(SecretId=unique_name, RotationLambdaARN=lam, RotateImmediately=False,
                         RotationRules={"ScheduleExpression": "rate(4 hours)", "Duration": "2h"})
    assert "VersionId" not in r, "no rotation ran, so no version was created"
    d = sm.describe_secret(SecretId=unique_name)
    assert d["RotationEnabled"] is True and d["RotationLambdaARN"] == lam
    assert d["RotationRules"] == {"ScheduleExpression": "rate(4 hours)", "Duration": "2h"}
    assert "LastRotatedDate" not in d
    assert d["VersionIdsToStages"] == {v1: ["AWSCURRENT"]}
    with pytest.raises(ClientError) as e:
        sm.rotate_secret(SecretId=unique_name, RotateImmediately=False,
                         RotationRules={"AutomaticallyAfterDays": 3, "ScheduleExpression": "rate(1 day)"})
    assert aws_error(e)[0] == "InvalidParameterException"
    sm.cancel_rotate_secret(SecretId=unique_name)
    assert sm.describe_secret(SecretId=unique_name)["RotationEnabled"] is False


def rotation(server, secret_id):
    status, body = awsraw.call(server, "baton.DescribeRotation", {"SecretId": secret_id})
    assert status == 200, body
    return body


def wait_for_status(server, secret_id, wanted, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        body = rotation(server, secret_id)
        if body.get("Status") == wanted:
            return body
        time.sleep(0.1)
    raise AssertionError(f"rotation did not reach {wanted}: {body}")


def test_a_built_in_rotation_runs_every_phase_and_keeps_json_fields(server, sm, unique_name):
    v1 = sm.create_secret(Name=unique_name, SecretString='{"username":"app","password":"old"}')["VersionId"]
    status, policy = awsraw.call(server, "baton.PutRotationPolicy", {
        "SecretId": unique_name, "PropagationDelaySeconds": 1, "RetireGraceSeconds": 1, "MaxAttempts": 3})
    assert status == 200, policy
    assert policy["Policy"]["PropagationDelaySeconds"] == 1
    lam = f"arn:aws:lambda:us-east-1:{server.account_id}:function:baton-random"
    # A plain AWS SDK reads it: it does not report what it caches, so each gate waits T.
    assert sm.get_secret_value(SecretId=unique_name)["VersionId"] == v1
    started = time.time()
    v2 = sm.rotate_secret(SecretId=unique_name, RotationLambdaARN=lam)["VersionId"]
    # Before the propagation gate, the new value is pending: accepted, not used.
    early = rotation(server, unique_name)
    assert early["VersionId"] == v2 and early["OldVersionId"] == v1
    assert sm.get_secret_value(SecretId=unique_name)["VersionId"] == v1
    done = wait_for_status(server, unique_name, "Succeeded")
    elapsed = time.time() - started
    assert elapsed >= 2, f"two gates of 1 s each were waited ({elapsed:.2f} s)"
    phases = [e["Event"] for e in done["Timeline"] if e["Event"].startswith("phase ")]
    assert phases == ["phase started", "phase created", "phase set", "phase tested", "phase propagated",
                      "phase promoted", "phase drained", "phase retired"], done["Timeline"]
    assert any("gate waiting" in e["Event"] for e in done["Timeline"])
    value = sm.get_secret_value(SecretId=unique_name)
    assert value["VersionId"] == v2
    new = json.loads(value["SecretString"])
    assert new["username"] == "app" and new["password"] != "old" and len(new["password"]) == 32
    # Retired: the old version lost AWSPREVIOUS and is no longer accepted.
    assert stages(sm, unique_name) == {v2: ["AWSCURRENT"]}
    _, ring = awsraw.call(server, "baton.GetSecretKeyring", {"SecretId": unique_name})
    assert [v["VersionId"] for v in ring["Accepted"]] == [v2]
    described = sm.describe_secret(SecretId=unique_name)
    assert described["RotationEnabled"] is True and "LastRotatedDate" in described
    # A second rotation after the first completed is allowed; a third while it runs is not.
    v3 = sm.rotate_secret(SecretId=unique_name)["VersionId"]
    with pytest.raises(ClientError) as e:
        sm.rotate_secret(SecretId=unique_name)
    assert aws_error(e) == ("InvalidRequestException",
                            "A previous rotation isn't complete. That rotation will be reattempted.", 400)
    assert sm.rotate_secret(SecretId=unique_name, ClientRequestToken=v3)["VersionId"] == v3, "retry is idempotent"
    wait_for_status(server, unique_name, "Succeeded")
    status, history = awsraw.call(server, "baton.ListRotations", {"SecretId": unique_name})
    assert status == 200, history
    assert [(r["VersionId"], r["Status"]) for r in history["Rotations"]] == [(v3, "Succeeded"), (v2, "Succeeded")]
    assert history["Rotations"][1]["Timeline"][0]["Event"] == "phase started"


def open_rotation(server, name, **request):
    status, out = awsraw.call(server, "baton.ListOpenRotations", request)
    assert status == 200, out
    return next((r for r in out["Rotations"] if r["Name"] == name), None), out


def test_open_rotations_name_the_consumers_holding_each_gate(server, sm, unique_name):
    """ListOpenRotations lists a rotation while it is in flight, with the live reporting
    consumers that do not hold the new version as HeldBy, and forgets it once cancelled."""
    v1 = sm.create_secret(Name=unique_name, SecretString="one")["VersionId"]
    awsraw.call(server, "baton.PutRotationPolicy",
                {"SecretId": unique_name, "PropagationDelaySeconds": 3600})

    def report(app, accepted):
        status, out = awsraw.call(server, "baton.ReportConsumer", {
            "Application": app, "InstanceId": "i-1", "LeaseSeconds": 120,
            "Holdings": [{"SecretId": unique_name, "CurrentVersionId": v1,
                          "AcceptedVersionIds": accepted}]})
        assert status == 200, out

    report("stuck", [v1])
    report("fresh", [v1])
    assert open_rotation(server, unique_name)[0] is None, "nothing in flight yet"
    lam = f"arn:aws:lambda:us-east-1:{server.account_id}:function:baton-random"
    v2 = sm.rotate_secret(SecretId=unique_name, RotationLambdaARN=lam)["VersionId"]
    deadline = time.time() + 20
    while True:
        r, _ = open_rotation(server, unique_name)
        if r and r.get("WaitingGate") == "propagation":
            break
        assert time.time() < deadline, r
        time.sleep(0.05)
    assert sorted(h["Application"] for h in r["HeldBy"]) == ["fresh", "stuck"], r
    report("fresh", [v1, v2])  # takes the new version, which exists once the gate waits
    r, _ = open_rotation(server, unique_name)
    assert r["Status"] == "InProgress" and r["VersionId"] == v2 and r["Phase"] == "tested", r
    assert r["HeldBy"] == [{"Application": "stuck", "InstanceId": "i-1"}], r
    assert r["Alerted"] is False and r["GateWaitedSeconds"] >= 0, r
    assert "reporting consumer" in r["GateReason"], r
    assert r["ARN"] == sm.describe_secret(SecretId=unique_name)["ARN"]

    sm.cancel_rotate_secret(SecretId=unique_name)
    assert open_rotation(server, unique_name)[0] is None, "a cancelled rotation is not open"


def test_open_rotations_list_the_schedule_within_the_window(server, sm, unique_name):
    sm.create_secret(Name=unique_name, SecretString="one")
    lam = f"arn:aws:lambda:us-east-1:{server.account_id}:function:baton-random"
    sm.rotate_secret(SecretId=unique_name, RotationLambdaARN=lam,
                     RotationRules={"AutomaticallyAfterDays": 1}, RotateImmediately=False)
    next_date = sm.describe_secret(SecretId=unique_name)["NextRotationDate"].timestamp()

    def scheduled(within):
        _, out = open_rotation(server, unique_name, ScheduledWithinSeconds=within)
        return [s for s in out["Scheduled"] if s["Name"] == unique_name]

    [entry] = scheduled(2 * 86_400)
    assert abs(entry["NextRotationDate"] - next_date) < 1, (entry, next_date)
    assert scheduled(0) == []


@pytest.mark.parametrize("request_body, member", [
    ({"MaxResults": 0}, "maxResults"),
    ({"MaxResults": 10_001}, "maxResults"),
    ({"ScheduledWithinSeconds": -1}, "scheduledWithinSeconds"),
])
def test_open_rotations_validate_their_bounds(server, request_body, member):
    status, out = awsraw.call(server, "baton.ListOpenRotations", request_body)
    assert status == 400, out
    assert out["__type"] == "ValidationException", out
    assert f"at '{member}' failed to satisfy constraint" in out["message"], out


def test_summaries_count_live_and_lagging_consumers_per_secret(server, sm, unique_name):
    v1 = sm.create_secret(Name=unique_name, SecretString="one")["VersionId"]
    status, out = awsraw.call(server, "baton.ReportConsumer", {
        "Application": "app", "InstanceId": "i-1", "LeaseSeconds": 120,
        "Holdings": [{"SecretId": unique_name, "CurrentVersionId": v1, "AcceptedVersionIds": [v1]}]})
    assert status == 200, out
    missing = unique_name + "-missing"

    def summary():
        status, out = awsraw.call(server, "baton.SummarizeSecrets", {"SecretIds": [unique_name, missing]})
        assert status == 200, out
        [mine] = out["Summaries"]
        [error] = out["Errors"]
        assert (error["SecretId"], error["ErrorCode"]) == (missing, "ResourceNotFoundException"), error
        return mine

    s = summary()
    assert (s["Name"], s["ConsumersLive"], s["ConsumersLagging"]) == (unique_name, 1, 0), s
    assert "RotationPhase" not in s and "WaitingGate" not in s, s
    # A new current version the consumer does not use: it lags.
    sm.put_secret_value(SecretId=unique_name, SecretString="two")
    s = summary()
    assert (s["ConsumersLive"], s["ConsumersLagging"]) == (1, 1), s
    status, out = awsraw.call(server, "baton.SummarizeSecrets", {"SecretIds": []})
    assert status == 400 and out["__type"] == "ValidationException", out


def test_a_rotation_can_be_cancelled_before_promotion(server, sm, unique_name):
    v1 = sm.create_secret(Name=unique_name, SecretString="one")["VersionId"]
    awsraw.call(server, "baton.PutRotationPolicy", {"SecretId": unique_name, "PropagationDelaySeconds": 3600})
    sm.get_secret_value(SecretId=unique_name)  # a plain reader holds the gate for T
    lam = f"arn:aws:lambda:us-east-1:{server.account_id}:function:baton-random"
    v2 = sm.rotate_secret(SecretId=unique_name, RotationLambdaARN=lam)["VersionId"]
    deadline = time.time() + 20
    while rotation(server, unique_name)["Phase"] != "tested" and time.time() < deadline:
        time.sleep(0.05)
    assert rotation(server, unique_name)["Phase"] == "tested", "held at the propagation gate"
    assert stages(sm, unique_name) == {v1: ["AWSCURRENT"], v2: ["AWSPENDING"]}
    cancelled = sm.cancel_rotate_secret(SecretId=unique_name)
    assert cancelled["VersionId"] == v2
    assert rotation(server, unique_name)["Status"] == "Cancelled"
    assert stages(sm, unique_name) == {v1: ["AWSCURRENT"]}
    assert sm.get_secret_value(SecretId=unique_name)["SecretString"] == "one"


def test_rotation_policies_are_validated(server, sm, unique_name):
    sm.create_secret(Name=unique_name, SecretString="x")
    for bad in ({"MaxAttempts": 0}, {"PropagationDelaySeconds": -1}, {"BlackoutWindows": ["25:00-01:00"]}):
        status, body = awsraw.call(server, "baton.PutRotationPolicy", {"SecretId": unique_name, **bad})
        assert (status, body["__type"]) == (400, "InvalidParameterException"), bad
    status, body = awsraw.call(server, "baton.PutRotationPolicy",
                               {"SecretId": unique_name, "BlackoutWindows": ["23:00-01:00"]})
    assert status == 200 and body["Policy"]["BlackoutWindows"] == ["23:00-01:00"]
    assert "Phase" not in body, "no rotation has run"


def test_batch_get_secret_value_reports_per_secret_errors(sm, unique_name):
    a = sm.create_secret(Name=unique_name + "/a", SecretString="A")["ARN"]
    sm.create_secret(Name=unique_name + "/b", SecretString="B")
    r = sm.batch_get_secret_value(SecretIdList=[a, unique_name + "/b", unique_name + "/missing"])
    assert sorted(v["SecretString"] for v in r["SecretValues"]) == ["A", "B"]
    assert [(x["SecretId"], x["ErrorCode"]) for x in r["Errors"]] == [(unique_name + "/missing", "ResourceNotFoundException")]
    r = sm.batch_get_secret_value(Filters=[{"Key": "name", "Values": [unique_name + "/"]}])
    assert sorted(v["SecretString"] for v in r["SecretValues"]) == ["A", "B"]
    with pytest.raises(ClientError) as e:
        sm.batch_get_secret_value(SecretIdList=[a], Filters=[{"Key": "name", "Values": ["x"]}])
    assert aws_error(e)[0] == "InvalidParameterException"


def test_regions_are_separate_namespaces(server, sm, unique_name):
    sm.create_secret(Name=unique_name, SecretString="east")
    west = server.client(region="eu-west-1")
    with pytest.raises(ClientError) as e:
        west.get_secret_value(SecretId=unique_name)
    assert aws_error(e)[0] == "ResourceNotFoundException"
    created = west.create_secret(Name=unique_name, SecretString="west")
    assert ":eu-west-1:" in created["ARN"]
    assert west.get_secret_value(SecretId=unique_name)["SecretString"] == "west"
    assert sm.get_secret_value(SecretId=unique_name)["SecretString"] == "east"
    with pytest.raises(ClientError) as e:
        server.client(region="ap-south-1").list_secrets()
    assert aws_error(e)[0] == "InvalidSignatureException"


def test_replicas_follow_every_write_to_their_primary(server, sm, unique_name):
    west = server.client(region="eu-west-1")
    created = sm.create_secret(Name=unique_name, SecretString="v1",
                               AddReplicaRegions=[{"Region": "eu-west-1", "KmsKeyId": "alias/west"}])
    assert created["ReplicationStatus"] == [{"Region": "eu-west-1", "KmsKeyId": "alias/west", "Status": "InSync",
                                              "StatusMessage": "Replication succeeded"}]
    replica_arn = created["ARN"].replace(":us-east-1:", ":eu-west-1:")
    for secret_id in (unique_name, replica_arn, replica_arn[:-7]):
        value = west.get_secret_value(SecretId=secret_id)
        assert (value["SecretString"], value["ARN"]) == ("v1", replica_arn)
    sm.put_secret_value(SecretId=unique_name, SecretString="v2")
    assert west.get_secret_value(SecretId=unique_name)["SecretString"] == "v2"
    described = west.describe_secret(SecretId=unique_name)
    assert described["PrimaryRegion"] == "us-east-1" and described["KmsKeyId"] == "alias/west"
    assert "ReplicationStatus" not in described
    assert [s["ARN"] for s in west.list_secrets(Filters=[{"Key": "name", "Values": [unique_name]}])["SecretList"]] == [replica_arn]
    with pytest.raises(ClientError) as e:
        west.put_secret_value(SecretId=unique_name, SecretString="from-the-replica")
    assert aws_error(e) == ("InvalidParameterException",
                            "Operation not permitted on a replica secret. Call must be made in primary secret's region.", 400)
    with pytest.raises(ClientError) as e:
        west.create_secret(Name=unique_name, SecretString="clash")
    assert aws_error(e)[0] == "ResourceExistsException"
    with pytest.raises(ClientError) as e:
        sm.delete_secret(SecretId=unique_name)
    assert aws_error(e) == ("InvalidParameterException",
                            f"You can't delete secret {created['ARN']} that still has replica regions [eu-west-1]", 400)


def test_replication_can_be_added_removed_and_promoted(server, sm, unique_name):
    west = server.client(region="eu-west-1")
    sm.create_secret(Name=unique_name, SecretString="v1")
    with pytest.raises(ClientError) as e:
        sm.replicate_secret_to_regions(SecretId=unique_name, AddReplicaRegions=[{"Region": "us-east-1"}])
    assert aws_error(e)[0] == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        sm.replicate_secret_to_regions(SecretId=unique_name, AddReplicaRegions=[{"Region": "mars-north-1"}])
    assert aws_error(e)[0] == "InvalidParameterException"
    r = sm.replicate_secret_to_regions(SecretId=unique_name, AddReplicaRegions=[{"Region": "eu-west-1"}])
    assert [s["Region"] for s in r["ReplicationStatus"]] == ["eu-west-1"]
    assert west.get_secret_value(SecretId=unique_name)["SecretString"] == "v1"
    r = sm.remove_regions_from_replication(SecretId=unique_name, RemoveReplicaRegions=["eu-west-1"])
    assert r["ReplicationStatus"] == []
    with pytest.raises(ClientError):
        west.get_secret_value(SecretId=unique_name)
    # Promote: the replica becomes a standalone secret in its region, with every version.
    sm.replicate_secret_to_regions(SecretId=unique_name, AddReplicaRegions=[{"Region": "eu-west-1"}])
    sm.put_secret_value(SecretId=unique_name, SecretString="v2")
    with pytest.raises(ClientError) as e:
        sm.stop_replication_to_replica(SecretId=unique_name)
    assert aws_error(e)[0] == "InvalidRequestException"
    promoted = west.stop_replication_to_replica(SecretId=unique_name)["ARN"]
    assert ":eu-west-1:" in promoted
    west.put_secret_value(SecretId=unique_name, SecretString="west-only")
    assert west.get_secret_value(SecretId=unique_name)["SecretString"] == "west-only"
    assert west.get_secret_value(SecretId=unique_name, VersionStage="AWSPREVIOUS")["SecretString"] == "v2"
    assert sm.get_secret_value(SecretId=unique_name)["SecretString"] == "v2"
    assert "ReplicationStatus" not in sm.describe_secret(SecretId=unique_name)


def test_force_overwrite_replaces_a_secret_in_the_replica_region(server, sm, unique_name):
    west = server.client(region="eu-west-1")
    west.create_secret(Name=unique_name, SecretString="resident")
    sm.create_secret(Name=unique_name, SecretString="primary")
    with pytest.raises(ClientError) as e:
        sm.replicate_secret_to_regions(SecretId=unique_name, AddReplicaRegions=[{"Region": "eu-west-1"}])
    assert aws_error(e)[0] == "ResourceExistsException"
    assert west.get_secret_value(SecretId=unique_name)["SecretString"] == "resident"
    sm.replicate_secret_to_regions(SecretId=unique_name, AddReplicaRegions=[{"Region": "eu-west-1"}],
                                   ForceOverwriteReplicaSecret=True)
    assert west.get_secret_value(SecretId=unique_name)["SecretString"] == "primary"


MISSING = "test/no-such-secret-anywhere"
OPERATIONS_ON_A_SECRET = [
    ("describe_secret", {}),
    ("get_secret_value", {}),
    ("put_secret_value", {"SecretString": "x"}),
    ("update_secret", {"Description": "x"}),
    ("update_secret_version_stage", {"VersionStage": "blue", "MoveToVersionId": "a" * 32}),
    ("list_secret_version_ids", {}),
    ("delete_secret", {}),
    ("restore_secret", {}),
    ("tag_resource", {"Tags": [{"Key": "k", "Value": "v"}]}),
    ("untag_resource", {"TagKeys": ["k"]}),
    ("put_resource_policy", {"ResourcePolicy": POLICY}),
    ("get_resource_policy", {}),
    ("delete_resource_policy", {}),
    ("rotate_secret", {"RotationLambdaARN": "arn:aws:lambda:us-east-1:1:function:f"}),
    ("cancel_rotate_secret", {}),
    ("replicate_secret_to_regions", {"AddReplicaRegions": [{"Region": "eu-west-1"}]}),
    ("remove_regions_from_replication", {"RemoveReplicaRegions": ["eu-west-1"]}),
    ("stop_replication_to_replica", {}),
]


@pytest.mark.parametrize("operation,params", OPERATIONS_ON_A_SECRET, ids=[o for o, _ in OPERATIONS_ON_A_SECRET])
def test_every_operation_on_a_missing_secret_is_not_found(sm, operation, params):
    with pytest.raises(ClientError) as e:
        getattr(sm, operation)(SecretId=MISSING, **params)
    assert aws_error(e) == ("ResourceNotFoundException", "Secrets Manager can't find the specified secret.", 400)


WRITES_REFUSED_WHILE_DELETED = [
    ("put_secret_value", {"SecretString": "x"}),
    ("update_secret", {"Description": "x"}),
    ("tag_resource", {"Tags": [{"Key": "k", "Value": "v"}]}),
    ("put_resource_policy", {"ResourcePolicy": POLICY}),
    ("rotate_secret", {"RotationLambdaARN": "arn:aws:lambda:us-east-1:1:function:f"}),
    ("replicate_secret_to_regions", {"AddReplicaRegions": [{"Region": "eu-west-1"}]}),
]


@pytest.mark.parametrize("operation,params", WRITES_REFUSED_WHILE_DELETED, ids=[o for o, _ in WRITES_REFUSED_WHILE_DELETED])
def test_writes_to_a_secret_scheduled_for_deletion_are_refused(sm, unique_name, operation, params):
    sm.create_secret(Name=unique_name, SecretString="x")
    sm.delete_secret(SecretId=unique_name, RecoveryWindowInDays=7)
    before = sm.describe_secret(SecretId=unique_name)
    with pytest.raises(ClientError) as e:
        getattr(sm, operation)(SecretId=unique_name, **params)
    assert aws_error(e)[0] == "InvalidRequestException"
    after = sm.describe_secret(SecretId=unique_name)
    assert after["LastChangedDate"] == before["LastChangedDate"], "nothing was written"


def test_the_keyring_lists_the_version_to_use_and_every_version_to_accept(server, sm, unique_name):
    v1 = sm.create_secret(Name=unique_name, SecretString="one")["VersionId"]
    status, ring = awsraw.call(server, "baton.GetSecretKeyring", {"SecretId": unique_name})
    assert status == 200, ring
    assert ring["Current"]["VersionId"] == v1 and ring["Current"]["SecretString"] == "one"
    assert [v["VersionId"] for v in ring["Accepted"]] == [v1]
    v2 = sm.put_secret_value(SecretId=unique_name, SecretString="two", VersionStages=["AWSPENDING"])["VersionId"]
    _, ring = awsraw.call(server, "baton.GetSecretKeyring", {"SecretId": unique_name})
    assert ring["Current"]["VersionId"] == v1, "pending is accepted, not used"
    assert [(v["VersionId"], v["SecretString"]) for v in ring["Accepted"]] == [(v2, "two"), (v1, "one")]
    sm.update_secret_version_stage(SecretId=unique_name, VersionStage="AWSCURRENT", MoveToVersionId=v2,
                                   RemoveFromVersionId=v1)
    sm.update_secret_version_stage(SecretId=unique_name, VersionStage="AWSPENDING", RemoveFromVersionId=v2)
    _, ring = awsraw.call(server, "baton.GetSecretKeyring", {"SecretId": unique_name})
    assert ring["Current"]["VersionId"] == v2
    assert [v["VersionId"] for v in ring["Accepted"]] == [v2, v1], "previous is still accepted"
    sm.update_secret_version_stage(SecretId=unique_name, VersionStage="AWSPREVIOUS", RemoveFromVersionId=v1)
    _, ring = awsraw.call(server, "baton.GetSecretKeyring", {"SecretId": unique_name})
    assert [v["VersionId"] for v in ring["Accepted"]] == [v2], "retired"
    status, body = awsraw.call(server, "baton.GetSecretKeyring", {"SecretId": "no/such"})
    assert (status, body["__type"]) == (400, "ResourceNotFoundException")
