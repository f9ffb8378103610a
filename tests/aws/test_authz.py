"""Authorization through real AWS clients: principals × operations × resources, with allow,
deny, wildcard, explicit-deny, resource-policy and condition cases, each asserted; what a
denial says (and does not say); kms:Decrypt on a secret's key; session credentials."""

import json
import random

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import awsraw
from conftest import REGION


def policy(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action, resource="*", **extra):
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action, resource="*", **extra):
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


def admin_call(server, target, body):
    status, out = awsraw.call(server, target, body)
    assert status == 200, out
    return out


class World:
    """Secrets, principals and clients of one test module, on one server."""

    def __init__(self, server):
        self.server = server
        self.run = f"authz{random.randrange(1 << 30)}"
        self.sm = server.client()
        self.arn_prefix = f"arn:aws:secretsmanager:{REGION}:{server.account_id}:secret:{self.run}"
        self.secrets = {}
        for name, tag in [("app/db", "payments"), ("app/api", "web"), ("other/x", "ops")]:
            full = f"{self.run}/{name}"
            out = self.sm.create_secret(Name=full, SecretString=f"value-of-{name}-{self.run}",
                                        Tags=[{"Key": "team", "Value": tag}])
            self.secrets[name] = out["ARN"]
        self.keys = {}

    def name(self, short):
        return f"{self.run}/{short}"

    def principal(self, short, *statements, kind="service"):
        name = f"{self.run}-{short}"
        admin_call(self.server, "baton.CreatePrincipal", {"Name": name, "Kind": kind})
        if statements:
            admin_call(self.server, "baton.PutPrincipalPolicy",
                       {"PrincipalName": name, "PolicyName": "p", "PolicyDocument": policy(*statements)})
        key = admin_call(self.server, "baton.CreateAccessKey", {"PrincipalName": name})["AccessKey"]
        self.keys[short] = (key["AccessKeyId"], key["SecretAccessKey"], name)
        return name

    def client(self, short, **kw):
        key_id, secret, _ = self.keys[short]
        return self.server.client(access_key=key_id, secret_key=secret, **kw)

    def arn_of(self, short):
        _, _, name = self.keys[short]
        return f"arn:aws:iam::{self.server.account_id}:role/{name}"


@pytest.fixture(scope="module")
def world(server):
    w = World(server)
    app = f"{w.arn_prefix}/app/*"
    w.principal("reader", allow(["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"], app),
                allow("secretsmanager:BatchGetSecretValue"))
    w.principal("wildcard", allow("secretsmanager:Get*", f"{w.arn_prefix}/*"))
    w.principal("all-but-db", allow("secretsmanager:*"), deny("*", f"{w.arn_prefix}/app/db-*"))
    w.principal("payments", allow("secretsmanager:GetSecretValue",
                                  Condition={"StringEquals": {"secretsmanager:ResourceTag/team": "payments"}}))
    w.principal("loopback", allow("secretsmanager:GetSecretValue",
                                  Condition={"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}))
    w.principal("elsewhere", allow("secretsmanager:GetSecretValue",
                                   Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}))
    w.principal("expired", allow("secretsmanager:GetSecretValue",
                                 Condition={"DateLessThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}))
    w.principal("current", allow("secretsmanager:GetSecretValue",
                                 Condition={"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}))
    w.principal("tls-only", allow("secretsmanager:GetSecretValue",
                                  Condition={"Bool": {"aws:SecureTransport": "true"}}))
    w.principal("nothing")
    w.principal("by-resource-policy")
    # other/x lets by-resource-policy read it, though no identity policy does; app/api denies
    # the reader explicitly in its resource policy.
    w.sm.put_resource_policy(SecretId=w.secrets["other/x"], ResourcePolicy=policy(
        {"Effect": "Allow", "Principal": {"AWS": w.arn_of("by-resource-policy")},
         "Action": "secretsmanager:GetSecretValue", "Resource": "*"}))
    w.sm.put_resource_policy(SecretId=w.secrets["app/api"], ResourcePolicy=policy(
        {"Effect": "Deny", "Principal": {"AWS": w.arn_of("reader")},
         "Action": "secretsmanager:*", "Resource": "*"}))
    return w


def outcome(call):
    try:
        call()
        return "allow"
    except ClientError as e:
        code = e.response["Error"]["Code"]
        if code == "AccessDeniedException":
            return "deny"
        if code == "ResourceNotFoundException":
            return "allow"  # authorized, and told truthfully that it does not exist
        raise


MATRIX = [
    # principal, operation, secret, expected
    ("reader", "get", "app/db", "allow"),
    ("reader", "describe", "app/db", "allow"),
    ("reader", "put", "app/db", "deny"),
    ("reader", "get", "other/x", "deny"),
    ("reader", "get", "app/api", "deny"),          # explicit deny in the resource policy
    ("reader", "describe", "app/api", "deny"),
    ("reader", "list", None, "deny"),
    ("reader", "tag", "app/db", "deny"),
    ("wildcard", "get", "app/db", "allow"),
    ("wildcard", "get", "other/x", "allow"),
    ("wildcard", "describe", "other/x", "deny"),
    ("wildcard", "policy", "other/x", "allow"),    # GetResourcePolicy matches Get*
    ("all-but-db", "get", "app/api", "allow"),
    ("all-but-db", "put", "app/api", "allow"),
    ("all-but-db", "list", None, "allow"),
    ("all-but-db", "get", "app/db", "deny"),        # explicit deny in an identity policy
    ("all-but-db", "describe", "app/db", "deny"),
    ("all-but-db", "tag", "app/db", "deny"),
    ("payments", "get", "app/db", "allow"),
    ("payments", "get", "app/api", "deny"),
    ("payments", "get", "other/x", "deny"),
    ("loopback", "get", "other/x", "allow"),
    ("elsewhere", "get", "other/x", "deny"),
    ("expired", "get", "other/x", "deny"),
    ("current", "get", "other/x", "allow"),
    ("tls-only", "get", "other/x", "deny"),         # this server speaks plain HTTP
    ("nothing", "get", "app/db", "deny"),
    ("nothing", "list", None, "deny"),
    ("nothing", "describe", "other/x", "deny"),
    ("by-resource-policy", "get", "other/x", "allow"),
    ("by-resource-policy", "describe", "other/x", "deny"),
    ("by-resource-policy", "get", "app/db", "deny"),
]


def perform(world, who, operation, secret):
    sm = world.client(who)
    arn = world.secrets.get(secret)
    return {
        "get": lambda: sm.get_secret_value(SecretId=arn),
        "describe": lambda: sm.describe_secret(SecretId=arn),
        "put": lambda: sm.put_secret_value(SecretId=arn, SecretString=f"new-{random.random()}"),
        "list": lambda: sm.list_secrets(),
        "tag": lambda: sm.tag_resource(SecretId=arn, Tags=[{"Key": "k", "Value": "v"}]),
        "policy": lambda: sm.get_resource_policy(SecretId=arn),
    }[operation]


@pytest.mark.parametrize("who,operation,secret,expected", MATRIX,
                         ids=[f"{w}-{o}-{s}" for w, o, s, _ in MATRIX])
def test_authorization_matrix(world, who, operation, secret, expected):
    assert outcome(perform(world, who, operation, secret)) == expected


def test_a_denial_names_principal_action_and_resource_as_given(world):
    sm = world.client("reader")
    with pytest.raises(ClientError) as e:
        sm.get_secret_value(SecretId=world.name("other/x"))
    message = e.value.response["Error"]["Message"]
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert message == (f"User: {world.arn_of('reader')} is not authorized to perform: "
                       f"secretsmanager:GetSecretValue on resource: {world.name('other/x')} "
                       "because no identity-based policy allows the secretsmanager:GetSecretValue action")
    with pytest.raises(ClientError) as e:
        world.client("all-but-db").get_secret_value(SecretId=world.name("app/db"))
    assert e.value.response["Error"]["Message"].endswith(
        f"on resource: {world.name('app/db')} with an explicit deny in an identity-based policy")
    with pytest.raises(ClientError) as e:
        world.client("reader").get_secret_value(SecretId=world.name("app/api"))
    assert e.value.response["Error"]["Message"].endswith("with an explicit deny in a resource-based policy")


def test_a_denial_does_not_reveal_whether_the_secret_exists(world):
    sm = world.client("reader")
    answers = []
    for name in ["other/x", "other/does-not-exist"]:
        with pytest.raises(ClientError) as e:
            sm.get_secret_value(SecretId=world.name(name))
        answers.append((e.value.response["Error"]["Code"],
                        e.value.response["Error"]["Message"].replace(world.name(name), "NAME")))
    assert answers[0] == answers[1]
    # The ARN suffix of the existing secret appears nowhere in the denial.
    with pytest.raises(ClientError) as e:
        sm.describe_secret(SecretId=world.name("other/x"))
    assert world.secrets["other/x"] not in e.value.response["Error"]["Message"]
    # Where the caller may look, it is told the truth.
    with pytest.raises(ClientError) as e:
        sm.get_secret_value(SecretId=world.name("app/does-not-exist"))
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_batch_reads_check_each_secret(world):
    out = world.client("reader").batch_get_secret_value(
        SecretIdList=[world.secrets["app/db"], world.secrets["other/x"]])
    assert [v["ARN"] for v in out["SecretValues"]] == [world.secrets["app/db"]]
    assert [(e["SecretId"], e["ErrorCode"]) for e in out["Errors"]] == [
        (world.secrets["other/x"], "AccessDeniedException")]
    with pytest.raises(ClientError) as e:
        world.client("nothing").batch_get_secret_value(SecretIdList=[world.secrets["app/db"]])
    assert "secretsmanager:BatchGetSecretValue" in e.value.response["Error"]["Message"]


def test_baton_operations_are_checked_too(world):
    key_id, secret, _ = world.keys["reader"]
    for target, body in [
        ("baton.ListEvents", {}),
        ("baton.ListConsumers", {"SecretId": world.secrets["app/db"]}),
        ("baton.CreatePrincipal", {"Name": "sneaky"}),
        ("baton.PutPrincipalPolicy", {"PrincipalName": "x", "PolicyName": "p",
                                       "PolicyDocument": policy(allow("*"))}),
        ("baton.CreateAccessKey", {"PrincipalName": "admin"}),
        ("baton.ListAuditEntries", {}),
        ("baton.CreateRotator", {"Name": "r", "Command": "true"}),
    ]:
        status, out = awsraw.call(world.server, target, body, access_key=key_id, secret_key=secret)
        assert (status, out["__type"]) == (400, "AccessDeniedException"), (target, out)
        message = out.get("Message") or out.get("message")
        assert f"baton:{target.split('.')[1]}" in message
    # Granted one by one, they run.
    world.principal("watcher", allow(["baton:ListConsumers", "baton:ListEvents"]))
    key_id, secret, _ = world.keys["watcher"]
    status, out = awsraw.call(world.server, "baton.ListConsumers", {"SecretId": world.secrets["app/db"]},
                              access_key=key_id, secret_key=secret)
    assert status == 200, out
    status, out = awsraw.call(world.server, "baton.ListEvents", {}, access_key=key_id, secret_key=secret)
    assert status == 200, out


def test_reading_a_secret_under_a_customer_key_needs_kms_decrypt(world):
    name = world.name("kms/app")
    kms = world.server.client("kms")
    if not any(a["AliasName"] == "alias/team-key" for a in kms.list_aliases(Limit=100)["Aliases"]):
        kms.create_alias(AliasName="alias/team-key", TargetKeyId=kms.create_key()["KeyMetadata"]["KeyId"])
    world.sm.create_secret(Name=name, SecretString="kms-protected-value", KmsKeyId="alias/team-key")
    world.principal("no-kms", allow("secretsmanager:GetSecretValue"))
    world.principal("with-kms", allow("secretsmanager:GetSecretValue"),
                    allow("kms:Decrypt", f"arn:aws:kms:{REGION}:{world.server.account_id}:alias/team-key"))
    with pytest.raises(ClientError) as e:
        world.client("no-kms").get_secret_value(SecretId=name)
    message = e.value.response["Error"]["Message"]
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    assert message.startswith("Access to KMS is not allowed")
    assert "kms:Decrypt" in message and "alias/team-key" in message
    assert "kms-protected-value" not in message
    assert world.client("with-kms").get_secret_value(SecretId=name)["SecretString"] == "kms-protected-value"
    # Secrets under the default key need no KMS permission.
    assert world.client("no-kms").get_secret_value(SecretId=world.secrets["app/db"])["SecretString"]
    # Writing under the customer key needs kms:GenerateDataKey.
    world.principal("writer", allow("secretsmanager:PutSecretValue"))
    with pytest.raises(ClientError) as e:
        world.client("writer").put_secret_value(SecretId=name, SecretString="v2")
    assert "kms:GenerateDataKey" in e.value.response["Error"]["Message"]


def test_session_credentials_carry_the_principal_rights_and_need_their_token(world):
    world.principal("sessions", allow(["secretsmanager:GetSecretValue", "baton:GetSessionToken"],
                                      f"{world.arn_prefix}/app/*"),
                    allow("baton:GetSessionToken"))
    key_id, secret, _ = world.keys["sessions"]
    status, out = awsraw.call(world.server, "baton.GetSessionToken", {"DurationSeconds": 900},
                              access_key=key_id, secret_key=secret)
    assert status == 200, out
    creds = out["Credentials"]
    assert creds["SessionToken"].startswith("bst_")

    def client(token):
        return boto3.client("secretsmanager", endpoint_url=world.server.endpoint, region_name=REGION,
                            aws_access_key_id=creds["AccessKeyId"],
                            aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=token,
                            config=Config(retries={"max_attempts": 1}))

    sm = client(creds["SessionToken"])
    assert sm.get_secret_value(SecretId=world.secrets["app/db"])["SecretString"].startswith("value-of-app/db")
    with pytest.raises(ClientError) as e:
        sm.get_secret_value(SecretId=world.secrets["other/x"])
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    token = creds["SessionToken"]
    altered = token[:-1] + ("x" if token[-1] != "x" else "y")
    for token in [None, altered]:
        with pytest.raises(ClientError) as e:
            client(token).get_secret_value(SecretId=world.secrets["app/db"])
        assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"
    status, out = awsraw.call(world.server, "baton.GetSessionToken", {}, access_key=creds["AccessKeyId"],
                              secret_key=creds["SecretAccessKey"],
                              headers={"x-amz-security-token": creds["SessionToken"]})
    assert (status, out["__type"]) == (400, "AccessDeniedException")
    status, out = awsraw.call(world.server, "baton.GetSessionToken", {"DurationSeconds": 60},
                              access_key=key_id, secret_key=secret)
    assert (status, out["__type"]) == (400, "ValidationException")


def test_policy_documents_are_validated_with_every_finding(world):
    world.principal("target")
    _, _, name = world.keys["target"]
    status, out = awsraw.call(world.server, "baton.PutPrincipalPolicy", {
        "PrincipalName": name, "PolicyName": "bad",
        "PolicyDocument": json.dumps({"Statement": [{"Effect": "Maybe", "Action": "GetSecretValue",
                                                     "Resource": "*", "Condition": {"Sorta": {"k": "v"}}}]})})
    assert (status, out["__type"]) == (400, "MalformedPolicyDocumentException")
    for needle in ["no Version", "Effect", "'GetSecretValue'", "Sorta"]:
        assert needle in out["Message"], out["Message"]
    status, out = awsraw.call(world.server, "baton.PutPrincipalPolicy", {
        "PrincipalName": "nobody-here", "PolicyName": "p", "PolicyDocument": policy(allow("*"))})
    assert (status, out["__type"]) == (400, "ResourceNotFoundException")
    status, out = awsraw.call(world.server, "baton.PutPrincipalPolicy", {
        "PrincipalName": "admin", "PolicyName": "p", "PolicyDocument": policy(deny("*"))})
    assert (status, out["__type"]) == (400, "InvalidRequestException")


def test_policy_changes_take_effect_at_once(world):
    name = world.principal("changing", allow("secretsmanager:GetSecretValue"))
    sm = world.client("changing")
    assert sm.get_secret_value(SecretId=world.secrets["other/x"])
    admin_call(world.server, "baton.PutPrincipalPolicy",
               {"PrincipalName": name, "PolicyName": "p2", "PolicyDocument": policy(deny("*"))})
    with pytest.raises(ClientError) as e:
        sm.get_secret_value(SecretId=world.secrets["other/x"])
    assert "explicit deny" in e.value.response["Error"]["Message"]
    admin_call(world.server, "baton.DeletePrincipalPolicy", {"PrincipalName": name, "PolicyName": "p2"})
    assert sm.get_secret_value(SecretId=world.secrets["other/x"])


def test_validate_resource_policy_reports_real_findings(world):
    out = world.sm.validate_resource_policy(ResourcePolicy=policy(
        {"Effect": "Allow", "Principal": "*", "Action": "secretsmanager:GetSecretValue", "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": "not-an-arn"}, "Action": "s3:GetObject", "Resource": "*",
         "Condition": {"IpAddress": {"aws:SourceIp": "300.1.1.1/8"}}}))
    assert out["PolicyValidationPassed"] is False
    messages = [(f["CheckName"], f["ErrorMessage"]) for f in out["ValidationErrors"]]
    text = " ".join(m for _, m in messages)
    assert "not-an-arn" in text and "s3:GetObject" in text and "300.1.1.1/8" in text
    good = world.sm.validate_resource_policy(ResourcePolicy=policy(
        {"Effect": "Allow", "Principal": {"AWS": world.arn_of("reader")},
         "Action": "secretsmanager:GetSecretValue", "Resource": "*"}))
    assert good["PolicyValidationPassed"] is True and good["ValidationErrors"] == []
    broad = world.sm.validate_resource_policy(ResourcePolicy=policy(
        {"Effect": "Allow", "Principal": "*", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}))
    assert [f["CheckName"] for f in broad["ValidationErrors"]] == ["BROAD_ACCESS_CHECK"]


def test_the_aws_cli_gets_the_same_denial(world, tmp_path):
    import os
    import subprocess
    key_id, secret, _ = world.keys["reader"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": REGION,
                "AWS_ENDPOINT_URL": world.server.endpoint, "AWS_MAX_ATTEMPTS": "1"})
    aws = os.path.join(os.path.dirname(os.path.realpath(os.sys.executable)), "aws")
    out = subprocess.run([aws, "secretsmanager", "get-secret-value", "--secret-id", world.name("other/x")],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "AccessDeniedException" in out.stderr and "secretsmanager:GetSecretValue" in out.stderr
    ok = subprocess.run([aws, "secretsmanager", "get-secret-value", "--secret-id", world.name("app/db")],
                        env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and json.loads(ok.stdout)["Name"] == world.name("app/db")


def readme_policies():
    """The JSON documents of the README's least-privilege example, as written there."""
    import re
    from pathlib import Path
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("### Least privilege"):]
    return dict(re.findall(r"cat > (\S+)\.json <<'JSON'\n(.*?)\nJSON", section, re.S))


def test_the_readme_least_privilege_example_does_what_it_says(world):
    docs = readme_policies()
    assert set(docs) == {"read-db", "rotate-own"}
    account = world.server.account_id
    for short, doc in [("billing-api", docs["read-db"]), ("db-rotator", docs["rotate-own"])]:
        name = world.principal(short)
        admin_call(world.server, "baton.PutPrincipalPolicy", {
            "PrincipalName": name, "PolicyName": short,
            "PolicyDocument": doc.replace("000000000000", account).replace("prod/", f"{world.run}-prod/")})
    sm = world.sm
    db = sm.create_secret(Name=f"{world.run}-prod/db", SecretString="readme-db-password",
                          Tags=[{"Key": "rotated-by", "Value": "db-rotator"}])["ARN"]
    other = sm.create_secret(Name=f"{world.run}-prod/other", SecretString="readme-other-password")["ARN"]
    billing = world.client("billing-api")
    assert billing.get_secret_value(SecretId=db)["SecretString"] == "readme-db-password"
    assert outcome(lambda: billing.get_secret_value(SecretId=other)) == "deny"
    assert outcome(lambda: billing.put_secret_value(SecretId=db, SecretString="nope-nope")) == "deny"
    rotator = world.client("db-rotator")
    assert outcome(lambda: rotator.put_secret_value(SecretId=db, SecretString="rotated-by-service")) == "allow"
    assert outcome(lambda: rotator.put_secret_value(SecretId=other, SecretString="not-mine-to-rotate")) == "deny"
    assert outcome(lambda: rotator.get_random_password(PasswordLength=20)) == "allow"
    assert outcome(lambda: rotator.delete_secret(SecretId=db)) == "deny"


def test_managing_principals_is_checked_on_the_principal(world):
    """A key manager may mint keys and attach policies for `team-*` users only: not for the
    administrator, not for other principals."""
    account = world.server.account_id
    team = f"team-{world.run}"
    admin_call(world.server, "baton.CreatePrincipal", {"Name": team})
    world.principal("key-manager", allow(["baton:CreateAccessKey", "baton:PutPrincipalPolicy",
                                          "baton:ListAccessKeys"],
                                         f"arn:aws:iam::{account}:user/team-*"))
    key_id, secret, _ = world.keys["key-manager"]

    def call(target, body):
        return awsraw.call(world.server, target, body, access_key=key_id, secret_key=secret)

    status, out = call("baton.CreateAccessKey", {"PrincipalName": team})
    assert status == 200 and out["AccessKey"]["PrincipalName"] == team, out
    status, out = call("baton.ListAccessKeys", {"PrincipalName": team})
    assert status == 200 and len(out["AccessKeys"]) == 1, out
    status, out = call("baton.PutPrincipalPolicy", {"PrincipalName": team, "PolicyName": "p",
                                                     "PolicyDocument": policy(allow("secretsmanager:ListSecrets"))})
    assert status == 200, out
    for target, body in [("baton.CreateAccessKey", {"PrincipalName": "admin"}),
                         ("baton.CreateAccessKey", {"PrincipalName": world.keys["reader"][2]}),
                         ("baton.PutPrincipalPolicy", {"PrincipalName": "admin", "PolicyName": "p",
                                                        "PolicyDocument": policy(allow("*"))}),
                         ("baton.ListAccessKeys", {})]:
        status, out = call(target, body)
        assert (status, out["__type"]) == (400, "AccessDeniedException"), (target, out)
    # A denial for a principal that exists reads like one for a name that does not.
    answers = []
    for name in [world.keys["reader"][2], f"nobody-{world.run}"]:
        status, out = call("baton.CreateAccessKey", {"PrincipalName": name})
        answers.append((status, out["__type"], (out.get("Message") or out.get("message")).replace(name, "NAME")))
    assert answers[0] == answers[1], answers


def test_an_empty_report_needs_no_permission_and_a_report_on_a_secret_does(world):
    key_id, secret, _ = world.keys["nothing"]
    body = {"Application": "app", "InstanceId": "i-1", "LeaseSeconds": 30}
    status, out = awsraw.call(world.server, "baton.ReportConsumer", {**body, "Holdings": []},
                              access_key=key_id, secret_key=secret)
    assert status == 200, out
    status, out = awsraw.call(world.server, "baton.ReportConsumer",
                              {**body, "Holdings": [{"SecretId": world.secrets["app/db"],
                                                     "AcceptedVersionIds": []}]},
                              access_key=key_id, secret_key=secret)
    assert (status, out["__type"]) == (400, "AccessDeniedException"), out


def test_giving_a_webhook_rotator_an_execution_policy_needs_pass_rotator_policy(world):
    """As iam:PassRole guards a Lambda's role: creating a rotator is one right, handing its
    steps an execution policy another. The document is checked like any identity policy."""
    import awsraw as raw

    execution = policy(allow("secretsmanager:GetSecretValue", world.secrets["other/x"]))
    world.principal("rotator-maker", allow("baton:CreateRotator"))
    world.principal("rotator-passer", allow(["baton:CreateRotator", "baton:PassRotatorPolicy"]))
    maker_id, maker_secret, _ = world.keys["rotator-maker"]
    passer_id, passer_secret, _ = world.keys["rotator-passer"]
    base = {"WebhookUrl": "http://127.0.0.1:9/rotate", "TimeoutSeconds": 5}

    status, out = raw.call(world.server, "baton.CreateRotator",
                           {**base, "Name": f"{world.run}-hook-a", "PolicyDocument": execution},
                           access_key=maker_id, secret_key=maker_secret)
    assert status == 400 and out["__type"] == "AccessDeniedException", out
    assert "baton:PassRotatorPolicy" in out["message"]
    status, out = raw.call(world.server, "baton.CreateRotator", {**base, "Name": f"{world.run}-hook-a"},
                           access_key=maker_id, secret_key=maker_secret)
    assert status == 200 and "PolicyDocument" not in out, out

    status, out = raw.call(world.server, "baton.CreateRotator",
                           {**base, "Name": f"{world.run}-hook-b",
                            "PolicyDocument": policy({"Effect": "Allow", "Action": "secretsmanager:GetSecretValue"})},
                           access_key=passer_id, secret_key=passer_secret)
    assert status == 400 and out["__type"] == "MalformedPolicyDocumentException", out
    status, out = raw.call(world.server, "baton.CreateRotator",
                           {**base, "Name": f"{world.run}-hook-b", "PolicyDocument": execution},
                           access_key=passer_id, secret_key=passer_secret)
    assert status == 200 and out["PolicyDocument"] == execution, out
    listed = {r["Name"]: r for r in admin_call(world.server, "baton.ListRotators", {})["Rotators"]}
    assert listed[f"{world.run}-hook-b"]["PolicyDocument"] == execution
    assert "PolicyDocument" not in listed[f"{world.run}-hook-a"]
