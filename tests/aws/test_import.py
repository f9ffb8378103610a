"""`baton admin import`: secrets copied from another Baton and from moto's server mode (a stand-in
for AWS Secrets Manager), with their version ids, labels, tags, descriptions and rotation
settings; a second run changes nothing and says so."""

import base64
import subprocess

import pytest

from conftest import BATON, free_port
from test_cli import env_for


def run_import(target, source_endpoint, *extra, env=None):
    run = subprocess.run([str(BATON), "admin", "import", "--from-endpoint", source_endpoint,
                          "--endpoint", target.endpoint, *extra],
                         env=env or env_for(target), capture_output=True, text=True, timeout=300)
    lines = run.stdout.strip().splitlines()
    assert lines, run.stderr
    counts = dict(part.split("=") for part in lines[-1].split())
    return run, {k: int(v) for k, v in counts.items()}


def view(sm, name):
    d = sm.describe_secret(SecretId=name)
    # moto lists deprecated versions with no labels; AWS lists only versions with labels.
    d["VersionIdsToStages"] = {k: v for k, v in d["VersionIdsToStages"].items() if v}
    values = {}
    for version, labels in d["VersionIdsToStages"].items():
        got = sm.get_secret_value(SecretId=name, VersionId=version)
        values[version] = got.get("SecretString") or base64.b64encode(got["SecretBinary"]).decode()
    return {"stages": {k: sorted(v) for k, v in d["VersionIdsToStages"].items()}, "values": values,
            "description": d.get("Description"), "tags": sorted((t["Key"], t["Value"]) for t in d.get("Tags", [])),
            "lambda": d.get("RotationLambdaARN"), "rules": d.get("RotationRules")}


def fill(sm, lam=None):
    """Secrets in the shapes an import meets: several versions, a custom label, AWSPENDING, a
    binary value, tags, rotation settings."""
    sm.create_secret(Name="imp/db", SecretString='{"user":"app","password":"p1"}', Description="the app's database",
                     Tags=[{"Key": "team", "Value": "payments"}, {"Key": "env", "Value": "prod"}])
    sm.put_secret_value(SecretId="imp/db", SecretString='{"user":"app","password":"p2"}')
    sm.put_secret_value(SecretId="imp/db", SecretString='{"user":"app","password":"p3"}')
    pending = sm.put_secret_value(SecretId="imp/db", SecretString='{"user":"app","password":"p4"}',
                                  VersionStages=["AWSPENDING"])["VersionId"]
    sm.update_secret_version_stage(SecretId="imp/db", VersionStage="blue", MoveToVersionId=pending)
    sm.create_secret(Name="imp/blob", SecretBinary=b"\x00\x01\x02 binary import")
    sm.create_secret(Name="imp/rotated", SecretString="r1")
    if lam:
        sm.rotate_secret(SecretId="imp/rotated", RotationLambdaARN=lam, RotateImmediately=False,
                         RotationRules={"AutomaticallyAfterDays": 30})
    sm.create_secret(Name="other/skipped", SecretString="not in the filter")


def check_copied(source_sm, target_sm, names, rotation=True):
    for name in names:
        want, got = view(source_sm, name), view(target_sm, name)
        assert got["stages"] == want["stages"], name
        assert got["values"] == want["values"], name
        assert got["description"] == want["description"] and got["tags"] == want["tags"], name
    if not rotation:
        return
    rotated = target_sm.describe_secret(SecretId="imp/rotated")
    assert rotated.get("RotationLambdaARN") == source_sm.describe_secret(SecretId="imp/rotated")["RotationLambdaARN"]
    assert not rotated.get("RotationEnabled"), "recorded, not run"


def test_import_from_another_baton_copies_versions_labels_and_settings_once(fresh):
    source, target = fresh(), fresh()
    source.start()
    target.start()
    src, dst = source.client(), target.client()
    fill(src, f"arn:aws:lambda:us-east-1:{source.account_id}:function:baton-random")
    names = ["imp/blob", "imp/db", "imp/rotated"]

    run, counts = run_import(target, source.endpoint, "--filter", "imp/")
    assert counts == {"imported": 3, "updated": 0, "unchanged": 0, "failed": 0}, run.stderr
    assert "importing 3 secret(s)" in run.stderr and "imp/db: imported" in run.stderr
    check_copied(src, dst, names)
    assert "other/skipped" not in [s["Name"] for s in dst.list_secrets()["SecretList"]]

    run, counts = run_import(target, source.endpoint, "--filter", "imp/")
    assert counts == {"imported": 0, "updated": 0, "unchanged": 3, "failed": 0}, run.stderr

    # A change at the source is copied, and only it.
    src.put_secret_value(SecretId="imp/db", SecretString='{"user":"app","password":"p5"}')
    src.tag_resource(SecretId="imp/blob", Tags=[{"Key": "owner", "Value": "ops"}])
    run, counts = run_import(target, source.endpoint, "--filter", "imp/")
    assert counts == {"imported": 0, "updated": 2, "unchanged": 1, "failed": 0}, run.stderr
    check_copied(src, dst, names)
    # No value reached the output.
    for value in ("p1", "p4", "p5", "binary import"):
        assert f'"password":"{value}"' not in run.stderr + run.stdout and "binary import" not in run.stderr


@pytest.fixture
def moto_endpoint():
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        pytest.skip("moto[server] is not installed (tests/aws/requirements.txt lists it)")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_import_from_moto_as_aws_stand_in_then_nothing_to_do(fresh, moto_endpoint, tmp_path):
    import boto3

    moto = boto3.client("secretsmanager", endpoint_url=moto_endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")
    # moto's RotateSecret needs a Lambda function it can find; rotation settings are covered by
    # the import from another Baton.
    fill(moto)
    target = fresh()
    target.start()
    credentials = tmp_path / "credentials"
    credentials.write_text("[moto]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    env = dict(env_for(target), AWS_SHARED_CREDENTIALS_FILE=str(credentials))
    run, counts = run_import(target, moto_endpoint, "--profile", "moto", "--filter", "imp/", env=env)
    assert counts == {"imported": 3, "updated": 0, "unchanged": 0, "failed": 0}, run.stderr
    check_copied(moto, target.client(), ["imp/blob", "imp/db", "imp/rotated"], rotation=False)
    run, counts = run_import(target, moto_endpoint, "--profile", "moto", "--filter", "imp/", env=env)
    assert counts == {"imported": 0, "updated": 0, "unchanged": 3, "failed": 0}, run.stderr


def test_an_unreachable_source_fails_with_one_clear_line(fresh):
    target = fresh()
    target.start()
    run = subprocess.run([str(BATON), "admin", "import", "--from-endpoint", f"http://127.0.0.1:{free_port()}",
                          "--endpoint", target.endpoint], env=env_for(target), capture_output=True, text=True,
                         timeout=60)
    assert run.returncode != 0
    assert "listing the secrets of http://127.0.0.1:" in run.stderr, run.stderr
