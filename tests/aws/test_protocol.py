"""The AWS JSON 1.1 protocol's edges: bad bodies, unknown operations, missing members, limits.
None of them may produce a 500 or a panic."""

import awsraw


def test_malformed_json_is_a_serialization_error(server):
    status, body = awsraw.call(server, "secretsmanager.GetSecretValue", body=b'{"SecretId": ')
    assert (status, body["__type"]) == (400, "SerializationException")
    assert "not valid JSON" in body["message"]


def test_a_member_of_the_wrong_type_is_a_serialization_error_that_does_not_echo_the_value(server):
    status, body = awsraw.call(server, "secretsmanager.CreateSecret",
                               body=b'{"Name": "x", "SecretString": 12345678, "Description": ["leak-me"]}')
    assert (status, body["__type"]) == (400, "SerializationException")
    assert "leak-me" not in body["message"] and "12345678" not in body["message"]


def test_unknown_and_missing_operations(server):
    status, body = awsraw.call(server, "secretsmanager.FlyToTheMoon", {})
    assert (status, body["__type"]) == (400, "UnknownOperationException")
    assert "FlyToTheMoon" in body["message"]
    status, body = awsraw.call(server, None, {})
    assert (status, body["__type"]) == (400, "UnknownOperationException")


def test_missing_required_members_are_validation_errors(server):
    status, body = awsraw.call(server, "secretsmanager.GetSecretValue", {})
    assert (status, body["__type"]) == (400, "ValidationException")
    assert "'secretId'" in body["message"]


def test_client_request_token_length_is_validated(server, unique_name):
    status, body = awsraw.call(server, "secretsmanager.CreateSecret",
                               {"Name": unique_name, "SecretString": "x", "ClientRequestToken": "short"})
    assert (status, body["__type"]) == (400, "ValidationException")
    assert "clientRequestToken" in body["message"]


def test_an_empty_body_means_no_parameters(server):
    status, body = awsraw.call(server, "secretsmanager.GetRandomPassword", body=b"")
    assert status == 200 and len(body["RandomPassword"]) == 32


def test_oversized_bodies_are_refused_with_an_aws_error(server):
    huge = b'{"Name": "x", "SecretString": "' + b"a" * (600 * 1024) + b'"}'
    status, body = awsraw.call(server, "secretsmanager.CreateSecret", body=huge)
    assert (status, body["__type"]) == (413, "RequestEntityTooLargeException")


def test_responses_carry_a_request_id_and_the_json_content_type(server):
    import urllib.request
    import json
    import datetime

    body = b"{}"
    headers = awsraw.sign("POST", f"127.0.0.1:{server.port}", body,
                          {"content-type": "application/x-amz-json-1.1", "x-amz-target": "secretsmanager.ListSecrets"},
                          "BTNTESTBOOTSTRAP0001", "test-bootstrap-secret-access-key-0123456789", "us-east-1",
                          "secretsmanager", datetime.datetime.now(datetime.timezone.utc))
    request = urllib.request.Request(f"{server.endpoint}/", data=body, method="POST",
                                     headers={k: v for k, v in headers.items() if k != "host"})
    with urllib.request.urlopen(request) as response:
        assert response.headers["Content-Type"] == "application/x-amz-json-1.1"
        assert len(response.headers["x-amzn-RequestId"]) == 36
        json.loads(response.read())
