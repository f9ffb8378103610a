"""A PostgreSQL alternating-users rotation function in the shape of AWS's published one
(SecretsManagerRDSPostgreSQLRotationMultiUser): a lambda_handler that dispatches the four steps,
boto3 for Secrets Manager, pg8000 for the database. Each rotation switches between the user and
its `_clone`; setSecret signs in with the master secret that the secret's `masterarn` names and
makes the other user, with the current user's rights, or gives it the new password.

It reads the master secret, which a Lambda may do because its execution role allows it: run
through Baton's command rotator, the rotator's execution policy must allow it too.
"""

import json
import logging

import boto3
import pg8000.native

logger = logging.getLogger()
logger.setLevel(logging.INFO)

CLONE_SUFFIX = "_clone"
# Characters AWS's database functions leave out of passwords.
EXCLUDE_CHARACTERS = "/@\"'\\"


def lambda_handler(event, context):
    arn = event["SecretId"]
    token = event["ClientRequestToken"]
    step = event["Step"]
    client = boto3.client("secretsmanager")

    metadata = client.describe_secret(SecretId=arn)
    if not metadata.get("RotationEnabled"):
        raise ValueError(f"Secret {arn} is not enabled for rotation")
    stages = metadata["VersionIdsToStages"]
    if token not in stages:
        raise ValueError(f"Secret version {token} has no stage for rotation of secret {arn}.")
    if "AWSCURRENT" in stages[token]:
        logger.info("Secret version %s is already AWSCURRENT for secret %s.", token, arn)
        return
    if "AWSPENDING" not in stages[token]:
        raise ValueError(f"Secret version {token} is not AWSPENDING for rotation of secret {arn}.")

    steps = {"createSecret": create_secret, "setSecret": set_secret,
             "testSecret": test_secret, "finishSecret": finish_secret}
    if step not in steps:
        raise ValueError(f"Invalid step parameter {step}")
    steps[step](client, arn, token)


def secret_dict(client, arn, stage, token=None):
    kwargs = {"SecretId": arn, "VersionStage": stage}
    if token:
        kwargs["VersionId"] = token
    value = json.loads(client.get_secret_value(**kwargs)["SecretString"])
    for field in ("engine", "host", "username", "password"):
        if field not in value:
            raise KeyError(f"{field} key is missing from the secret JSON")
    if value["engine"] != "postgres":
        raise KeyError("Database engine must be set to 'postgres' in order to use this rotation function")
    return value


def other_user(username):
    if username.endswith(CLONE_SUFFIX):
        return username[: -len(CLONE_SUFFIX)]
    return username + CLONE_SUFFIX


def create_secret(client, arn, token):
    current = secret_dict(client, arn, "AWSCURRENT")
    try:
        secret_dict(client, arn, "AWSPENDING", token)
        logger.info("createSecret: the pending version of %s exists already.", arn)
        return
    except client.exceptions.ResourceNotFoundException:
        pass
    pending = dict(current)
    pending["username"] = other_user(current["username"])
    pending["password"] = client.get_random_password(ExcludeCharacters=EXCLUDE_CHARACTERS)["RandomPassword"]
    client.put_secret_value(SecretId=arn, ClientRequestToken=token,
                            SecretString=json.dumps(pending), VersionStages=["AWSPENDING"])
    logger.info("createSecret: stored the pending version %s of %s.", token, arn)


def connect(value):
    try:
        return pg8000.native.Connection(user=value["username"], password=value["password"],
                                        host=value["host"], port=int(value.get("port", 5432)),
                                        database=value.get("dbname", "postgres"), timeout=5)
    except pg8000.exceptions.DatabaseError:
        return None
    except OSError:
        return None


def set_secret(client, arn, token):
    current = secret_dict(client, arn, "AWSCURRENT")
    pending = secret_dict(client, arn, "AWSPENDING", token)
    conn = connect(pending)
    if conn:
        conn.close()
        logger.info("setSecret: the pending credentials of %s work already.", arn)
        return
    master_arn = current.get("masterarn")
    if not master_arn:
        raise KeyError("masterarn is missing from the secret JSON: the alternating-users function needs it")
    master = secret_dict(client, master_arn, "AWSCURRENT")
    if (current["host"], current.get("port")) != (master["host"], master.get("port")):
        raise ValueError("The master secret names another database host than the secret")
    conn = connect(master)
    if not conn:
        raise ValueError("Unable to sign in with the master secret's credentials")
    try:
        user, current_user = pending["username"], current["username"]
        exists = conn.run("SELECT 1 FROM pg_roles WHERE rolname = :name", name=user)
        if exists:
            conn.run(f"ALTER USER {pg8000.native.identifier(user)} WITH PASSWORD "
                     f"{pg8000.native.literal(pending['password'])}")
        else:
            conn.run(f"CREATE ROLE {pg8000.native.identifier(user)} WITH LOGIN PASSWORD "
                     f"{pg8000.native.literal(pending['password'])}")
            conn.run(f"GRANT {pg8000.native.identifier(current_user)} TO {pg8000.native.identifier(user)}")
        logger.info("setSecret: set the password of %s for %s.", user, arn)
    finally:
        conn.close()


def test_secret(client, arn, token):
    pending = secret_dict(client, arn, "AWSPENDING", token)
    conn = connect(pending)
    if not conn:
        raise ValueError(f"Unable to sign in with the pending credentials of {arn}")
    try:
        conn.run("SELECT NOW()")
    finally:
        conn.close()


def finish_secret(client, arn, token):
    stages = client.describe_secret(SecretId=arn)["VersionIdsToStages"]
    current = next((v for v, s in stages.items() if "AWSCURRENT" in s), None)
    if current == token:
        return
    client.update_secret_version_stage(SecretId=arn, VersionStage="AWSCURRENT",
                                       MoveToVersionId=token, RemoveFromVersionId=current)
