"""The aws CLI and the baton CLI, as a person would use them against a running server."""

import json
import random
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ACCESS_KEY_ID, BATON, SECRET_ACCESS_KEY

AWS = str(Path(sys.executable).with_name("aws"))


def env_for(server, access_key=ACCESS_KEY_ID, secret_key=SECRET_ACCESS_KEY):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "BATON_ENDPOINT": server.endpoint,
    })
    return env


def aws(server, *args):
    out = subprocess.run([AWS, "--endpoint-url", server.endpoint, "secretsmanager", *args, "--output", "json"],
                         env=env_for(server), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if out.stdout.strip() else {}


def baton(server, *args, input=None, env=None, check=True):
    out = subprocess.run([str(BATON), *args], env=env or env_for(server), capture_output=True, text=True,
                         input=input, timeout=60)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def test_quickstart_aws_cli_writes_and_baton_cli_reads(server, unique_name):
    created = aws(server, "create-secret", "--name", unique_name, "--secret-string", '{"user":"app","password":"pw1"}')
    assert created["Name"] == unique_name
    assert baton(server, "secret", "get", unique_name).stdout == '{"user":"app","password":"pw1"}\n'
    aws(server, "put-secret-value", "--secret-id", unique_name, "--secret-string", "pw2")
    got = aws(server, "get-secret-value", "--secret-id", unique_name)
    assert got["SecretString"] == "pw2"
    listed = aws(server, "list-secrets", "--filters", f"Key=name,Values={unique_name}")
    assert [s["Name"] for s in listed["SecretList"]] == [unique_name]
    aws(server, "delete-secret", "--secret-id", unique_name, "--force-delete-without-recovery")
    out = baton(server, "secret", "get", unique_name, check=False)
    assert out.returncode == 1
    assert "ResourceNotFoundException" in out.stderr


def test_baton_secret_commands_cover_the_lifecycle(server, unique_name, tmp_path):
    value_file = tmp_path / "value"
    value_file.write_text("from-a-file")
    baton(server, "secret", "create", unique_name, "--value-file", str(value_file),
          "--description", "made by the CLI", "--tag", "team=core")
    assert baton(server, "secret", "get", unique_name).stdout == "from-a-file\n"
    put = json.loads(baton(server, "secret", "put", unique_name, "--value-file", "-", "--stage", "AWSPENDING",
                           "--output", "json", input="pending-value").stdout)
    pending = put["VersionId"]
    assert put["VersionStages"] == ["AWSPENDING"]
    assert baton(server, "secret", "get", unique_name, "--stage", "AWSPENDING").stdout == "pending-value\n"
    described = json.loads(baton(server, "secret", "describe", unique_name, "--output", "json").stdout)
    current = next(v for v, s in described["VersionIdsToStages"].items() if "AWSCURRENT" in s)
    assert described["Tags"] == [{"Key": "team", "Value": "core"}]
    table = baton(server, "secret", "describe", unique_name).stdout
    assert "made by the CLI" in table and "AWSPENDING" in table
    assert "from-a-file" not in table, "describe never shows values"
    baton(server, "secret", "label", unique_name,
          "--move", f"AWSCURRENT:{current}:{pending}", "--move", f"AWSPENDING:{pending}:")
    assert baton(server, "secret", "get", unique_name).stdout == "pending-value\n"
    versions = json.loads(baton(server, "secret", "versions", unique_name, "--output", "json").stdout)["Versions"]
    assert {v["VersionId"]: v["VersionStages"] for v in versions} == {pending: ["AWSCURRENT"], current: ["AWSPREVIOUS"]}
    baton(server, "secret", "update", unique_name, "--description", "changed")
    baton(server, "secret", "tag", unique_name, "env=prod", "--remove", "team")
    described = json.loads(baton(server, "secret", "describe", unique_name, "--output", "json").stdout)
    assert described["Description"] == "changed" and described["Tags"] == [{"Key": "env", "Value": "prod"}]
    listed = baton(server, "secret", "list", "--name-prefix", unique_name).stdout
    assert unique_name in listed
    baton(server, "secret", "delete", unique_name, "--recovery-days", "7")
    assert unique_name not in baton(server, "secret", "list", "--name-prefix", unique_name).stdout
    assert unique_name in baton(server, "secret", "list", "--name-prefix", unique_name, "--include-deleted").stdout
    baton(server, "secret", "restore", unique_name)
    assert baton(server, "secret", "get", unique_name).stdout == "pending-value\n"


def test_binary_values_through_the_cli(server, unique_name, tmp_path):
    blob = tmp_path / "blob"
    blob.write_bytes(bytes(range(256)))
    baton(server, "secret", "create", unique_name, "--binary-file", str(blob))
    out = subprocess.run([str(BATON), "secret", "get", unique_name], env=env_for(server), capture_output=True, timeout=60)
    assert out.returncode == 0 and out.stdout == bytes(range(256))


def test_principals_policies_and_access_keys_through_the_cli(server, tmp_path):
    name = f"ci-{random.randrange(1 << 30)}"
    baton(server, "admin", "principal", "create", name, "--kind", "service")
    created = json.loads(baton(server, "admin", "access-key", "create", "--principal", name, "--output", "json").stdout)
    key = created["AccessKey"]
    assert key["PrincipalName"] == name
    listed = baton(server, "admin", "access-key", "list", "--principal", name).stdout
    assert key["AccessKeyId"] in listed and key["SecretAccessKey"] not in listed
    as_new_key = env_for(server, key["AccessKeyId"], key["SecretAccessKey"])
    denied = baton(server, "secret", "list", env=as_new_key, check=False)
    assert denied.returncode == 1 and "AccessDeniedException" in denied.stderr
    assert f"role/{name} is not authorized to perform: secretsmanager:ListSecrets" in denied.stderr
    policy = tmp_path / "list.json"
    policy.write_text(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "secretsmanager:ListSecrets", "Resource": "*"}]}))
    baton(server, "admin", "policy", "put", name, "list-only", "--document", str(policy))
    assert "list-only" in baton(server, "admin", "principal", "list").stdout
    assert "ListSecrets" in baton(server, "admin", "policy", "get", name, "list-only").stdout
    assert baton(server, "secret", "list", env=as_new_key).returncode == 0
    baton(server, "admin", "access-key", "delete", key["AccessKeyId"])
    refused = baton(server, "secret", "list", env=as_new_key, check=False)
    assert refused.returncode == 1 and "UnrecognizedClientException" in refused.stderr
    baton(server, "admin", "principal", "delete", name)
    assert name not in baton(server, "admin", "principal", "list").stdout


def test_cli_reads_the_shared_credentials_file_and_profile(server, tmp_path):
    creds = tmp_path / "credentials"
    creds.write_text(f"[default]\naws_access_key_id = nope\naws_secret_access_key = nope\n\n"
                     f"[baton]\naws_access_key_id = {ACCESS_KEY_ID}\naws_secret_access_key = {SECRET_ACCESS_KEY}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_SHARED_CREDENTIALS_FILE": str(creds), "AWS_PROFILE": "baton", "BATON_ENDPOINT": server.endpoint})
    assert baton(server, "secret", "list", env=env).returncode == 0
    env["AWS_PROFILE"] = "missing"
    out = baton(server, "secret", "list", env=env, check=False)
    assert out.returncode == 1 and "[missing]" in out.stderr


def test_cli_errors_name_the_problem(server):
    env = env_for(server)
    env["BATON_ENDPOINT"] = "http://127.0.0.1:1"
    out = baton(server, "secret", "list", env=env, check=False)
    assert out.returncode == 1 and "could not reach Baton at http://127.0.0.1:1" in out.stderr
    out = baton(server, "secret", "put", "x", check=False)
    assert out.returncode == 1 and "--value-file" in out.stderr


def test_session_credentials_from_the_cli_work_with_the_cli(server):
    """`baton admin session-token` prints shell exports; the CLI signs with them, token and all."""
    exports = baton(server, "admin", "session-token", "--duration-seconds", "900").stdout
    creds = dict(line.removeprefix("export ").split("=", 1) for line in exports.splitlines()
                 if line.startswith("export "))
    assert set(creds) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
    from conftest import remember_sensitive
    remember_sensitive({"SecretAccessKey": creds["AWS_SECRET_ACCESS_KEY"],
                        "SessionToken": creds["AWS_SESSION_TOKEN"]})
    env = env_for(server, creds["AWS_ACCESS_KEY_ID"], creds["AWS_SECRET_ACCESS_KEY"])
    without_token = baton(server, "secret", "list", env=env, check=False)
    assert without_token.returncode == 1 and "UnrecognizedClientException" in without_token.stderr
    env["AWS_SESSION_TOKEN"] = creds["AWS_SESSION_TOKEN"]
    assert baton(server, "secret", "list", env=env).returncode == 0


def test_policy_put_warns_about_resources_of_another_account_or_region(server, unique_name, tmp_path):
    name = "warned-" + unique_name.rsplit("-", 1)[-1]
    baton(server, "admin", "principal", "create", name, "--kind", "service")
    document = tmp_path / "policy.json"
    document.write_text(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
         "Resource": ["arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-*",
                      "arn:aws:secretsmanager:ap-south-9:" + server.account_id + ":secret:x-*",
                      "arn:aws:secretsmanager:us-east-1:" + server.account_id + ":secret:ok-*"]}]}))
    out = baton(server, "admin", "policy", "put", name, "p", "--document", str(document))
    assert "attached policy p" in out.stdout
    warnings = [line for line in out.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, out.stderr
    assert "names account 123456789012" in warnings[0] and server.account_id in warnings[0]
    assert "names region ap-south-9" in warnings[1]


def test_the_readme_quickstart_runs_as_written(tmp_path):
    """Every shell block of the README's quickstart, run by bash against a server started as
    the quickstart starts it: only the port differs, and `baton` is the build under test."""
    import re
    import subprocess
    from pathlib import Path

    from conftest import BATON, REPO, BatonServer

    text = (REPO / "README.md").read_text()
    section = text[text.index("## Five-minute quickstart"):text.index("## Running the server")]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) >= 2, blocks
    srv = BatonServer(data_dir=tmp_path / "baton-data", engine="sqlite")
    srv.start()
    try:
        script = "set -euo pipefail\n" + "\n".join(
            line for block in blocks for line in block.splitlines()
            if not line.startswith("cargo run")  # the server runs already
        ).replace("127.0.0.1:8080", f"127.0.0.1:{srv.port}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["PATH"] = f"{Path(BATON).parent}:{REPO / '.venv' / 'bin'}:{env['PATH']}"
        env["BATON_ENDPOINT"] = srv.endpoint
        run = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        assert '"password":"s3cret"' in run.stdout and "rotation Succeeded" in run.stdout, run.stdout
        assert "phase promoted" in run.stdout
    finally:
        srv.stop()


def readme_baton_commands():
    """Every `baton …` command line in the README's sh and bash blocks, as written."""
    import re
    import shlex

    from conftest import REPO

    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```(?:sh|bash)\n(.*?)```", text, re.S):
        block = re.sub(r"\\\n\s*", " ", block)  # a line continued with a backslash is one command
        for line in block.splitlines():
            line = line.split("  #")[0].split(" # ")[0].strip()
            if line.startswith("baton ") and "$(" not in line:
                argv = []
                for token in shlex.split(line):
                    if token in (">", ">>", "<", "|", "&&", ";", "2>&1"):
                        break  # the shell's, not baton's
                    argv.append(token)
                commands.append(argv)
    return commands


def test_every_baton_command_in_the_readme_parses():
    """Each `baton` line of the README names real subcommands and flags (checked by the CLI's
    own parser, with --help so nothing is sent anywhere)."""
    commands = readme_baton_commands()
    assert len(commands) >= 15, commands
    for argv in commands:
        run = subprocess.run([str(BATON), *argv[1:], "--help"], capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, (" ".join(argv), run.stderr)
