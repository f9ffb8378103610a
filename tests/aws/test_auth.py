"""SigV4 verification: what a correctly signed request gets, and what every kind of bad one gets."""

import datetime

import pytest

import awsraw
from conftest import ACCESS_KEY_ID, SECRET_ACCESS_KEY


def test_a_correctly_signed_raw_request_is_accepted(server):
    status, body = awsraw.call(server, "secretsmanager.ListSecrets", {})
    assert status == 200, body
    assert "SecretList" in body


def test_wrong_secret_key_is_an_invalid_signature(server):
    status, body = awsraw.call(server, "secretsmanager.ListSecrets", {}, secret_key="not-the-secret")
    assert status == 400
    assert awsraw.error_of(body) == (
        "InvalidSignatureException",
        "The request signature we calculated does not match the signature you provided. Check your "
        "AWS Secret Access Key and signing method. Consult the service documentation for details.",
    )


def test_tampered_body_is_an_invalid_signature(server):
    def tamper(headers, body):
        return body.replace(b"{}", b'{"MaxResults": 1}')

    status, body = awsraw.call(server, "secretsmanager.ListSecrets", {}, tamper=tamper)
    assert (status, body["__type"]) == (400, "InvalidSignatureException")


def test_tampered_signed_header_is_an_invalid_signature(server):
    def tamper(headers, body):
        headers["x-amz-target"] = "secretsmanager.DeleteSecret"
        return body

    status, body = awsraw.call(server, "secretsmanager.ListSecrets", {}, tamper=tamper)
    assert (status, body["__type"]) == (400, "InvalidSignatureException")


def test_a_date_more_than_15_minutes_old_is_refused(server):
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=16)
    status, body = awsraw.call(server, "secretsmanager.ListSecrets", {}, when=old)
    code, message = awsraw.error_of(body)
    assert (status, code) == (400, "InvalidSignatureException")
    assert message.startswith("Signature expired: ") and message.endswith("- 15 min.)")
    fresh = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=14)
    assert awsraw.call(server, "secretsmanager.ListSecrets", {}, when=fresh)[0] == 200


def test_a_date_in_the_future_is_refused(server):
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=16)
    status, body = awsraw.call(server, "secretsmanager.ListSecrets", {}, when=future)
    assert (status, body["__type"]) == (400, "InvalidSignatureException")
    assert "not yet current" in body["message"]


def test_unknown_access_key_is_unrecognized(server):
    status, body = awsraw.call(server, "secretsmanager.ListSecrets", {}, access_key="BTNNOSUCHKEY00000000")
    assert status == 400
    assert awsraw.error_of(body) == (
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    )


def test_a_session_token_baton_did_not_issue_is_unrecognized(server):
    status, body = awsraw.call(server, "secretsmanager.ListSecrets", {},
                               headers={"x-amz-security-token": "FwoGZXIvYXdzEJr"})
    assert (status, body["__type"]) == (400, "UnrecognizedClientException")


def test_missing_authorization_is_a_missing_token(server):
    def strip(headers, body):
        del headers["authorization"]
        return body

    status, body = awsraw.call(server, "secretsmanager.ListSecrets", {}, tamper=strip)
    assert status == 400
    assert awsraw.error_of(body) == ("MissingAuthenticationTokenException", "Missing Authentication Token")


def test_incomplete_authorization_names_each_missing_part(server):
    def strip(headers, body):
        headers["authorization"] = headers["authorization"].split(", Signature=")[0]
        del headers["x-amz-date"]
        return body

    status, body = awsraw.call(server, "secretsmanager.ListSecrets", {}, tamper=strip)
    code, message = awsraw.error_of(body)
    assert (status, code) == (400, "IncompleteSignatureException")
    assert "'Signature' parameter" in message
    assert "'X-Amz-Date'" in message
    assert "'Credential' parameter" not in message


def test_credentials_must_be_scoped_to_a_served_region_and_the_service(server):
    status, body = awsraw.call(server, "secretsmanager.ListSecrets", {}, region="mars-north-1")
    assert (status, body["__type"]) == (400, "InvalidSignatureException")
    assert "mars-north-1" in body["message"]
    status, body = awsraw.call(server, "secretsmanager.ListSecrets", {}, service="s3")
    assert (status, body["__type"]) == (400, "InvalidSignatureException")


def test_boto3_with_a_wrong_secret_gets_the_aws_error(server):
    from botocore.exceptions import ClientError

    client = server.client(secret_key="wrong" + SECRET_ACCESS_KEY)
    with pytest.raises(ClientError) as e:
        client.list_secrets()
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert ACCESS_KEY_ID  # the bootstrap key is what the server fixture created
