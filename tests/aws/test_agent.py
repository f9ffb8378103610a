"""`baton agent` speaks AWS's Secrets Manager Agent protocol on loopback: the same paths, token
header, refusals and answer shape. Unlike AWS's agent it is never stale: its watch refetches a
rotated secret at once, and because it reports what it holds, rotations wait for it rather than
for a blind delay. It also renders file sinks atomically and runs their reload command."""

import json
import os
import stat
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

import awsraw
from conftest import ACCESS_KEY_ID, BATON, SECRET_ACCESS_KEY, free_port

TOKEN = "agent-test-ssrf-token-0123456789"


def agent_env(server, **extra):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
               AWS_REGION="us-east-1", AWS_TOKEN=TOKEN, RUST_LOG="info")
    env.pop("AWS_SESSION_TOKEN", None)
    env.update(extra)
    return env


def get(port, path, headers=None, method="GET"):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     headers={"X-Aws-Parameters-Secrets-Token": TOKEN, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def agent(server, tmp_path):
    """Starts `baton agent` with an optional config; yields a function that starts it."""
    procs = []

    def start(config_text="", expect_ready=True, **env):
        port = free_port()
        config = tmp_path / f"agent-{port}.toml"
        config.write_text(config_text)
        log = open(tmp_path / f"agent-{port}.log", "wb")
        proc = subprocess.Popen([str(BATON), "agent", "--endpoint", server.endpoint, "--port", str(port),
                                 "--config", str(config)], env=agent_env(server, **env),
                                stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        if expect_ready:
            deadline = time.time() + 20
            while time.time() < deadline:
                try:
                    if get(port, "/ping")[0] == 200:
                        return port
                except OSError:
                    time.sleep(0.05)
            raise AssertionError((tmp_path / f"agent-{port}.log").read_text())
        return proc, tmp_path / f"agent-{port}.log"

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def test_the_agent_answers_like_aws_agent_and_refuses_what_it_refuses(server, sm, unique_name, agent):
    created = sm.create_secret(Name=unique_name, SecretString='{"password":"one"}')
    port = agent()
    assert get(port, "/ping", headers={"X-Aws-Parameters-Secrets-Token": ""}) == (200, "healthy")
    quoted = urllib.parse.quote(unique_name, safe="")
    status, body = get(port, f"/secretsmanager/get?secretId={quoted}")
    assert status == 200, body
    value = json.loads(body)
    assert value["ARN"] == created["ARN"] and value["Name"] == unique_name
    assert value["VersionId"] == created["VersionId"] and value["VersionStages"] == ["AWSCURRENT"]
    assert value["SecretString"] == '{"password":"one"}' and "CreatedDate" in value
    # The path form, and the other token header AWS's agent accepts.
    status, body = get(port, f"/v1/{quoted}", headers={"X-Aws-Parameters-Secrets-Token": "",
                                                        "X-Vault-Token": TOKEN})
    assert status == 200 and json.loads(body)["VersionId"] == created["VersionId"], body
    # Refusals, with AWS's agent's statuses.
    assert get(port, f"/secretsmanager/get?secretId={quoted}",
               headers={"X-Aws-Parameters-Secrets-Token": "wrong"}) == (403, "Bad Token")
    assert get(port, f"/secretsmanager/get?secretId={quoted}",
               headers={"X-Forwarded-For": "10.0.0.1"}) == (400, "Forwarded")
    assert get(port, f"/secretsmanager/get?secretId={quoted}", method="POST") == (405, "Not allowed")
    assert get(port, "/elsewhere")[0] == 404
    status, body = get(port, "/secretsmanager/get?secretId=no-such-secret-" + quoted)
    assert status == 400 and json.loads(body)["__type"] == "ResourceNotFoundException", body
    status, body = get(port, "/secretsmanager/get?versionStage=AWSCURRENT")
    assert status == 400 and "secretId is required" in body
    # A custom label is read past the keyring.
    v2 = sm.put_secret_value(SecretId=unique_name, SecretString="two", VersionStages=["BLUE"])["VersionId"]
    status, body = get(port, f"/secretsmanager/get?secretId={quoted}&versionStage=BLUE")
    assert status == 200 and json.loads(body)["VersionId"] == v2, body
    # Baton's keyring view.
    status, body = get(port, f"/baton/keyring?secretId={quoted}")
    ring = json.loads(body)
    assert status == 200 and ring["Current"]["VersionId"] == created["VersionId"] and ring["Revision"]


def test_the_agent_is_never_stale_and_rotations_wait_for_it_not_for_t(server, sm, unique_name, agent, tmp_path):
    sm.create_secret(Name=unique_name, SecretString='{"username":"app","password":"first"}')
    env_file, reloads = tmp_path / "app.env", tmp_path / "reloads"
    port = agent(f'''
application = "web-sidecar"
instance_id = "host-a"
[[sink]]
secret_id = "{unique_name}"
template = "DB_USER={{{{json.username}}}}\\nDB_PASSWORD={{{{json.password}}}}\\nVERSION={{{{version_id}}}}\\n"
destination = "{env_file}"
mode = "0600"
reload_command = "echo reloaded >> {reloads}"
''')
    quoted = urllib.parse.quote(unique_name, safe="")
    first = json.loads(get(port, f"/secretsmanager/get?secretId={quoted}")[1])
    deadline = time.time() + 10
    while not env_file.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert env_file.read_text() == f"DB_USER=app\nDB_PASSWORD=first\nVERSION={first['VersionId']}\n"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    # A rotation with T = one hour: the agent is the only consumer, and it reports.
    status, body = awsraw.call(server, "baton.PutRotationPolicy", {
        "SecretId": unique_name, "PropagationDelaySeconds": 3600, "RetireGraceSeconds": 0})
    assert status == 200, body
    started = time.time()
    new = sm.rotate_secret(SecretId=unique_name, RotationLambdaARN=(
        f"arn:aws:lambda:us-east-1:{server.account_id}:function:baton-random"))["VersionId"]
    while True:
        status, r = awsraw.call(server, "baton.DescribeRotation", {"SecretId": unique_name})
        if r.get("Status") == "Succeeded":
            break
        assert time.time() - started < 60, r
        time.sleep(0.05)
    # The agent already serves the new value: no refreshNow, no TTL wait.
    now = json.loads(get(port, f"/secretsmanager/get?secretId={quoted}")[1])
    assert now["VersionId"] == new and json.loads(now["SecretString"])["password"] != "first"
    status, consumers = awsraw.call(server, "baton.ListConsumers", {"SecretId": unique_name})
    assert [(c["Application"], c["InstanceId"], c["CurrentVersionId"]) for c in consumers["Consumers"]] == [
        ("web-sidecar", "host-a", new)]
    # The sink followed, atomically, and the reload command ran once per change.
    deadline = time.time() + 10
    while f"VERSION={new}" not in env_file.read_text() and time.time() < deadline:
        time.sleep(0.05)
    assert f"VERSION={new}" in env_file.read_text()
    assert reloads.read_text().count("reloaded") == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".baton-tmp")] == []


def test_the_agent_refuses_an_unknown_config_key_and_a_missing_token(server, agent):
    proc, log = agent("http_prot = 2774\n", expect_ready=False)
    assert proc.wait(timeout=10) != 0
    assert "http_prot" in log.read_text()
    proc, log = agent("", expect_ready=False, AWS_TOKEN="", AWS_CONTAINER_AUTHORIZATION_TOKEN="")
    assert proc.wait(timeout=10) != 0
    assert "SSRF token" in log.read_text()


def test_the_agent_takes_credentials_from_a_profile_and_says_where_they_came_from(server, sm, unique_name,
                                                                                   agent, tmp_path):
    sm.create_secret(Name=unique_name, SecretString="from-a-profile")
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[baton]\naws_access_key_id = {ACCESS_KEY_ID}\n"
                           f"aws_secret_access_key = {SECRET_ACCESS_KEY}\n")
    port = agent(AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="", AWS_SHARED_CREDENTIALS_FILE=str(credentials),
                 AWS_PROFILE="baton")
    status, body = get(port, f"/secretsmanager/get?secretId={urllib.parse.quote(unique_name, safe='')}")
    assert status == 200 and json.loads(body)["SecretString"] == "from-a-profile", body
    log = (tmp_path / f"agent-{port}.log").read_text()
    assert f"http://127.0.0.1:{port}" in log and f"profile baton in {credentials}" in log, log
