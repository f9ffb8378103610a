"""KMS grants, as the AWS KMS API reference documents them: CreateGrant (with a name, a
retiring principal, constraints and DryRun), ListGrants, ListRetirableGrants, RetireGrant and
RevokeGrant. A grant lets its grantee use one key where the policies are silent, never past an
explicit Deny, under its encryption-context constraints; every use is audited with the grant."""

import base64
import json
import random

import pytest
from botocore.exceptions import ClientError

import awsraw


def admin(server, op, **params):
    status, out = awsraw.call(server, f"TrentService.{op}", params, service="kms")
    assert status == 200, out
    return out


def code(e):
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


@pytest.fixture
def grants_world(server):
    run = f"grants{random.randrange(1 << 30)}"

    def principal(short, policy=None):
        name = f"{run}-{short}"
        status, out = awsraw.call(server, "baton.CreatePrincipal", {"Name": name, "Kind": "service"})
        assert status == 200, out
        if policy:
            status, out = awsraw.call(server, "baton.PutPrincipalPolicy", {
                "PrincipalName": name, "PolicyName": "p", "PolicyDocument": json.dumps(policy)})
            assert status == 200, out
        status, out = awsraw.call(server, "baton.CreateAccessKey", {"PrincipalName": name})
        assert status == 200, out
        key = out["AccessKey"]
        client = server.client("kms", access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"])
        return f"arn:aws:iam::{server.account_id}:role/{name}", client

    return principal


def test_a_grant_lets_its_grantee_use_the_key_within_its_constraints(server, grants_world):
    kms = server.client("kms")
    key = kms.create_key()["KeyMetadata"]
    app_arn, app = grants_world("app")
    retirer_arn, retirer = grants_world("retirer")
    with pytest.raises(ClientError) as e:
        app.encrypt(KeyId=key["KeyId"], Plaintext=b"secret data", EncryptionContext={"tenant": "a"})
    assert code(e)[0] == "AccessDeniedException"

    grant = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=app_arn, Name="app-tenant-a",
                             Operations=["Encrypt", "Decrypt"], RetiringPrincipal=retirer_arn,
                             Constraints={"EncryptionContextSubset": {"tenant": "a"}})
    assert len(grant["GrantId"]) == 64 and grant["GrantToken"]
    again = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=app_arn, Name="app-tenant-a",
                             Operations=["Encrypt", "Decrypt"], RetiringPrincipal=retirer_arn,
                             Constraints={"EncryptionContextSubset": {"tenant": "a"}})
    assert again["GrantId"] == grant["GrantId"], "the same name and grant is the same request"

    sealed = app.encrypt(KeyId=key["KeyId"], Plaintext=b"secret data",
                         EncryptionContext={"tenant": "a", "purpose": "test"}, GrantTokens=[grant["GrantToken"]])
    assert app.decrypt(CiphertextBlob=sealed["CiphertextBlob"],
                       EncryptionContext={"tenant": "a", "purpose": "test"})["Plaintext"] == b"secret data"
    with pytest.raises(ClientError) as e:
        app.encrypt(KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext={"tenant": "b"})
    assert code(e)[0] == "AccessDeniedException", "the constraint holds"
    with pytest.raises(ClientError) as e:
        app.generate_data_key(KeyId=key["KeyId"], KeySpec="AES_256", EncryptionContext={"tenant": "a"})
    assert code(e)[0] == "AccessDeniedException", "only the granted operations"
    with pytest.raises(ClientError) as e:
        app.describe_key(KeyId=key["KeyId"])
    assert code(e)[0] == "AccessDeniedException"

    listed = kms.list_grants(KeyId=key["KeyId"])["Grants"]
    assert [(g["GrantId"], g["Name"], g["GranteePrincipal"], g["RetiringPrincipal"], sorted(g["Operations"]))
            for g in listed] == [(grant["GrantId"], "app-tenant-a", app_arn, retirer_arn, ["Decrypt", "Encrypt"])]
    assert listed[0]["Constraints"] == {"EncryptionContextSubset": {"tenant": "a"}}
    assert listed[0]["KeyId"] == key["Arn"] and listed[0]["IssuingAccount"] == f"arn:aws:iam::{server.account_id}:root"
    assert kms.list_grants(KeyId=key["KeyId"], GranteePrincipal=retirer_arn)["Grants"] == []
    retirable = kms.list_retirable_grants(RetiringPrincipal=retirer_arn)["Grants"]
    assert [g["GrantId"] for g in retirable] == [grant["GrantId"]]

    # Every use through the grant is audited as allowed by it.
    status, out = awsraw.call(server, "baton.ListAuditEntries",
                              {"AfterSeq": -200, "MaxResults": 200, "Action": "kms:Encrypt", "Decision": "allow"})
    assert status == 200, out
    assert any(grant["GrantId"] in e["Reason"] and app_arn.rsplit("/", 1)[-1] in e["Principal"]
               for e in out["Entries"]), out["Entries"][-3:]

    # The retiring principal, with no policy of its own, retires it by its token.
    retirer.retire_grant(GrantToken=grant["GrantToken"])
    with pytest.raises(ClientError) as e:
        app.encrypt(KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext={"tenant": "a"})
    assert code(e)[0] == "AccessDeniedException"
    assert kms.list_grants(KeyId=key["KeyId"])["Grants"] == []
    # Data encrypted through the grant still decrypts for whoever may decrypt.
    assert kms.decrypt(CiphertextBlob=sealed["CiphertextBlob"],
                       EncryptionContext={"tenant": "a", "purpose": "test"})["Plaintext"] == b"secret data"


def test_an_explicit_deny_beats_a_grant_and_equals_constraints_are_exact(server, grants_world):
    kms = server.client("kms")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    denied_arn, denied = grants_world("denied", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Action": "kms:*", "Resource": "*"}]})
    exact_arn, exact = grants_world("exact")
    kms.create_grant(KeyId=key, GranteePrincipal=denied_arn, Operations=["Encrypt"])
    with pytest.raises(ClientError) as e:
        denied.encrypt(KeyId=key, Plaintext=b"x")
    assert code(e)[0] == "AccessDeniedException" and "explicit" in code(e)[1].lower()
    g = kms.create_grant(KeyId=key, GranteePrincipal=exact_arn, Operations=["Encrypt", "RetireGrant"],
                         Constraints={"EncryptionContextEquals": {"app": "billing"}})
    exact.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"app": "billing"})
    for ctx in ({}, {"app": "billing", "more": "1"}):
        with pytest.raises(ClientError) as e:
            exact.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext=ctx)
        assert code(e)[0] == "AccessDeniedException", ctx
    # A grantee whose grant allows RetireGrant may retire it, by key and grant id.
    exact.retire_grant(KeyId=key, GrantId=g["GrantId"])
    assert kms.list_grants(KeyId=key, GranteePrincipal=exact_arn)["Grants"] == []
    # Revoking: the key's administrator removes a grant; an unknown id is InvalidGrantIdException.
    other = kms.create_grant(KeyId=key, GranteePrincipal=exact_arn, Operations=["Encrypt"])
    kms.revoke_grant(KeyId=key, GrantId=other["GrantId"])
    with pytest.raises(ClientError) as e:
        kms.revoke_grant(KeyId=key, GrantId=other["GrantId"])
    assert code(e)[0] == "InvalidGrantIdException"
    with pytest.raises(ClientError) as e:
        exact.retire_grant(KeyId=key, GrantId=other["GrantId"])
    assert code(e)[0] == "NotFoundException"


def test_create_grant_checks_its_input_and_writes_nothing(server):
    kms = server.client("kms")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    grantee = f"arn:aws:iam::{server.account_id}:role/someone"

    def refused(**params):
        status, out = awsraw.call(server, "TrentService.CreateGrant",
                                  {"KeyId": key, "GranteePrincipal": grantee, **params}, service="kms")
        assert status != 200, out
        return status, out["__type"], out["message"]

    _, kind, message = refused(Operations=["Fly"])
    assert kind == "ValidationException" and "Member must satisfy enum value set" in message
    _, kind, message = refused(Operations=["Sign"])
    assert kind == "ValidationException" and "not valid for" in message and "SYMMETRIC_DEFAULT" in message
    _, kind, message = refused(Operations=["Encrypt"], Constraints={
        "EncryptionContextSubset": {"a": "1"}, "EncryptionContextEquals": {"a": "1"}})
    assert kind == "ValidationException" and "not both" in message
    _, kind, _ = refused(Operations=["DescribeKey"], Constraints={"EncryptionContextSubset": {"a": "1"}})
    assert kind == "ValidationException"
    _, kind, _ = refused(Operations=["Encrypt"], Name="bad name!")
    assert kind == "ValidationException"
    _, kind, _ = refused(Operations=["Encrypt"], GrantTokens=["not-a-token"])
    assert kind == "InvalidGrantTokenException"
    status, kind, _ = refused(Operations=["Encrypt"], DryRun=True)
    assert (status, kind) == (412, "DryRunOperationException")
    assert kms.list_grants(KeyId=key)["Grants"] == [], "nothing was written"
    with pytest.raises(ClientError) as e:
        kms.retire_grant(GrantToken="AQpAM2RhZTk1MGMyNTk2ZmZmMzEyYWVhOWViN2I1MWM4Mzc0MWFiYjc0ZDE1ODkyNGFlNTIzODZhMzgyZjBlNGY3NiKIAQEBAgB4")
    assert code(e)[0] == "InvalidGrantTokenException"
    # Nobody grants the AWS managed key: only its service uses it.
    with pytest.raises(ClientError) as e:
        kms.create_grant(KeyId="alias/aws/secretsmanager", GranteePrincipal=grantee, Operations=["Decrypt"])
    assert code(e)[0] == "AccessDeniedException"
