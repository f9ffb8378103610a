"""Backup and restore, end to end: `baton admin backup` from a running server under load with a
rotation in flight, `baton admin restore` into a fresh embedded store and a fresh PostgreSQL
database, and every refusal (damaged, truncated, wrong key, non-empty target) writing nothing."""

import base64
import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time

import pytest

import awsraw
from conftest import BATON, BatonServer, psql
from test_cli import baton, env_for


def dump(srv):
    """Everything a client can see of a server, in one comparable structure."""
    sm = srv.client()
    kms = srv.client("kms")
    out = {"secrets": {}, "keys": {}, "aliases": {}, "principals": {}}
    for page in sm.get_paginator("list_secrets").paginate(IncludePlannedDeletion=True):
        for s in page["SecretList"]:
            d = sm.describe_secret(SecretId=s["ARN"])
            versions = {}
            for v in sm.list_secret_version_ids(SecretId=s["ARN"], IncludeDeprecated=True)["Versions"]:
                if "DeletedDate" in d:  # values of a secret scheduled for deletion cannot be read
                    versions[v["VersionId"]] = None
                    continue
                got = sm.get_secret_value(SecretId=s["ARN"], VersionId=v["VersionId"])
                versions[v["VersionId"]] = got.get("SecretString") or base64.b64encode(got["SecretBinary"]).decode()
            out["secrets"][s["Name"]] = {
                "arn": d["ARN"], "description": d.get("Description"), "tags": d.get("Tags"),
                "stages": {k: sorted(v) for k, v in d.get("VersionIdsToStages", {}).items()},
                "versions": versions, "deleted": "DeletedDate" in d,
            }
    for k in kms.list_keys()["Keys"]:
        meta = kms.describe_key(KeyId=k["KeyId"])["KeyMetadata"]
        out["keys"][k["KeyId"]] = {"spec": meta["KeySpec"], "state": meta["KeyState"],
                                   "rotations": len(kms.list_key_rotations(KeyId=k["KeyId"]).get("Rotations", []))}
    for a in kms.list_aliases()["Aliases"]:
        out["aliases"][a["AliasName"]] = a.get("TargetKeyId")
    status, principals = awsraw.call(srv, "baton.ListPrincipals", {})
    assert status == 200, principals
    for p in principals["Principals"]:
        out["principals"][p["Name"]] = p
    return out


def describe_rotation(srv, name):
    status, body = awsraw.call(srv, "baton.DescribeRotation", {"SecretId": name})
    assert status == 200, body
    return body


def restore(args, check=True):
    run = subprocess.run([str(BATON), "admin", "restore", *args], capture_output=True, text=True, timeout=300)
    if check:
        assert run.returncode == 0, run.stderr
    return run


def populate(srv):
    """Secrets with several versions, labels, tags and a binary value; a KMS key with an alias and
    a ciphertext; a principal with a policy and an access key; a rotation held at its gate."""
    sm, kms = srv.client(), srv.client("kms")
    for i in range(20):
        name = f"app/{i}"
        sm.create_secret(Name=name, SecretString=f"v0-{i}", Description=f"secret {i}",
                         Tags=[{"Key": "team", "Value": f"t{i % 3}"}])
        for n in range(1, 1 + i % 4):
            sm.put_secret_value(SecretId=name, SecretString=f"v{n}-{i}")
    sm.create_secret(Name="app/binary", SecretBinary=b"\x00\x01\xff binary-sealed-7f3")
    sm.delete_secret(SecretId="app/3", RecoveryWindowInDays=7)
    key = kms.create_key(Description="backup key")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/backup", TargetKeyId=key)
    ciphertext = kms.encrypt(KeyId="alias/backup", Plaintext=b"kms plaintext")["CiphertextBlob"]
    for target, body in [("baton.CreatePrincipal", {"Name": "reader", "Kind": "service"}),
                         ("baton.PutPrincipalPolicy", {"PrincipalName": "reader", "PolicyName": "read",
                                                       "PolicyDocument": json.dumps({
                                                           "Version": "2012-10-17", "Statement": [{
                                                               "Effect": "Allow",
                                                               "Action": "secretsmanager:GetSecretValue",
                                                               "Resource": "*"}]})})]:
        status, out = awsraw.call(srv, target, body)
        assert status == 200, out
    status, out = awsraw.call(srv, "baton.CreateAccessKey", {"PrincipalName": "reader"})
    assert status == 200, out
    reader_key = out["AccessKey"]
    # A rotation held at its propagation gate: a plain read makes the gate wait T = 4 s.
    sm.create_secret(Name="rotating", SecretString='{"password":"pw-before-93d1"}')
    status, body = awsraw.call(srv, "baton.PutRotationPolicy",
                               {"SecretId": "rotating", "PropagationDelaySeconds": 4, "RetireGraceSeconds": 0})
    assert status == 200, body
    sm.get_secret_value(SecretId="rotating")
    lam = f"arn:aws:lambda:us-east-1:{srv.account_id}:function:baton-random"
    rotation = sm.rotate_secret(SecretId="rotating", RotationLambdaARN=lam)["VersionId"]
    deadline = time.time() + 20
    while describe_rotation(srv, "rotating").get("WaitingGate") != "propagation":
        assert time.time() < deadline, describe_rotation(srv, "rotating")
        time.sleep(0.05)
    return {"ciphertext": ciphertext, "reader": reader_key, "rotation": rotation}


class Writer(threading.Thread):
    """A load generator: PutSecretValue on a few secrets as fast as it can, until stopped."""

    def __init__(self, srv):
        super().__init__(daemon=True)
        self.sm = srv.client()
        self.stop_event = threading.Event()
        self.writes = 0
        self.errors = []
        for i in range(4):
            self.sm.create_secret(Name=f"load/{i}", SecretString="0")

    def run(self):
        n = 0
        while not self.stop_event.is_set():
            n += 1
            try:
                self.sm.put_secret_value(SecretId=f"load/{n % 4}", SecretString=str(n))
                self.writes += 1
            except Exception as e:  # noqa: BLE001 (counted and reported by the test)
                self.errors.append(repr(e))

    def stop(self):
        self.stop_event.set()
        self.join(timeout=30)


def check_restored(srv, before, facts, taken_while_loaded):
    """What a restored server must show: the state written before the backup, the load secrets
    consistent (never torn), the key decrypting, the principal's key working, the rotation
    finishing, and the audit chain verifying."""
    after = dump(srv)
    for name, secret in before["secrets"].items():
        if name.startswith("load/") or name == "rotating":
            continue
        assert after["secrets"][name] == secret, name
    assert after["keys"] == before["keys"] and after["aliases"] == before["aliases"]
    assert after["principals"] == before["principals"]
    for i in range(4):
        s = after["secrets"][f"load/{i}"]
        current = [v for v, stages in s["stages"].items() if "AWSCURRENT" in stages]
        assert len(current) == 1, s["stages"]
        # Every version that has a label holds a value: one revision, never torn.
        assert all(v in s["versions"] for v in s["stages"]), s
    # Writes that finished before the backup began are in it.
    assert taken_while_loaded >= 4
    assert all(len(after["secrets"][f"load/{i}"]["versions"]) >= 2 for i in range(4)), after["secrets"]["load/0"]
    kms = srv.client("kms")
    assert kms.decrypt(CiphertextBlob=facts["ciphertext"])["Plaintext"] == b"kms plaintext"
    reader = srv.client(access_key=facts["reader"]["AccessKeyId"], secret_key=facts["reader"]["SecretAccessKey"])
    assert reader.get_secret_value(SecretId="app/1")["SecretString"] == "v1-1"
    # The rotation that was held at its gate resumes on the restored store and completes.
    deadline = time.time() + 60
    while (r := describe_rotation(srv, "rotating")).get("Status") != "Succeeded":
        assert time.time() < deadline and r.get("Status") not in ("Stopped", "Failed"), r
        time.sleep(0.2)
    stages = srv.client().describe_secret(SecretId="rotating")["VersionIdsToStages"]
    assert "AWSCURRENT" in stages[facts["rotation"]], stages
    verified = baton(srv, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_backup_taken_under_load_restores_into_sqlite_and_postgres(tmp_path):
    source = BatonServer(data_dir=tmp_path / "source", engine="sqlite").start()
    try:
        facts = populate(source)
        writer = Writer(source)
        writer.start()
        time.sleep(0.5)
        writes_before = writer.writes
        out = baton(source, "admin", "backup", "--output", str(tmp_path / "baton.backup"))
        writer.stop()
        assert not writer.errors, writer.errors[:3]
        assert "backup written to" in out.stdout and "audit chain end: " in out.stdout, out.stdout
        assert oct((tmp_path / "baton.backup").stat().st_mode & 0o777) == "0o600"
        # What the suite sees before the source stops, static parts only.
        before = dump(source)
    finally:
        source.stop()
    backup_file = tmp_path / "baton.backup"
    raw = backup_file.read_bytes()
    for plaintext in [b"v0-11", b"kms plaintext", b"pw-before-93d1", b"binary-sealed-7f3", facts["reader"]["SecretAccessKey"].encode()]:
        assert plaintext not in raw, "values stay sealed in the backup"
    key = source.data_dir / "root.key"

    # Into a fresh embedded store.
    target = tmp_path / "restored"
    done = restore(["--input", str(backup_file), "--data-dir", str(target), "--root-key-file", str(key)])
    assert "restored" in done.stdout and "audit chain end: " in done.stdout, done.stdout
    # The embedded store keeps one chain; its end as the backup names it is in the restored file.
    (end,) = [l for l in done.stdout.splitlines() if l.startswith("audit chain end: ")]
    at, hash_hex = int(end.split()[3]), end.split()[5]
    conn = sqlite3.connect(target / "baton.db")
    assert conn.execute("SELECT lower(hex(hash)) FROM audit_log WHERE chain = '' AND chain_seq = ?",
                        (at,)).fetchall() == [(hash_hex,)], end
    assert conn.execute("SELECT MAX(chain_seq) FROM audit_log").fetchone() == (at,)
    conn.close()
    restored = BatonServer(data_dir=target, engine="sqlite", account_id=source.account_id).start()
    try:
        check_restored(restored, before, facts, writes_before)
        sqlite_view = dump(restored)
    finally:
        restored.stop()

    # Into a fresh PostgreSQL database: the move from one node to several.
    url = os.environ.get("BATON_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("BATON_TEST_POSTGRES_URL is not set: the restore into PostgreSQL was not tested")
    name = f"baton_backup_{os.getpid()}"
    psql(url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    psql(url, f"CREATE DATABASE {name}")
    pg_url = url.rpartition("/")[0] + "/" + name
    try:
        restore(["--input", str(backup_file), "--database-url", pg_url, "--root-key-file", str(key)])
        nodes = []
        for i in range(2):
            node_dir = tmp_path / f"node{i}"
            node_dir.mkdir(mode=0o700)
            shutil.copy(key, node_dir / "root.key")
            nodes.append(BatonServer(data_dir=node_dir, engine="postgres", database_url=pg_url,
                                     account_id=source.account_id).start())
        try:
            # Both nodes serve the same restored state; the SQLite restore saw the same one
            # (before the rotation moved on there).
            pg_view = dump(nodes[1])
            for view in (sqlite_view, pg_view):
                view["secrets"].pop("rotating")
            assert pg_view == sqlite_view
            check_restored(nodes[0], before, facts, writes_before)
        finally:
            for n in nodes:
                n.stop()
    finally:
        psql(url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_a_damaged_or_foreign_backup_is_refused_and_nothing_is_written(tmp_path):
    source = BatonServer(data_dir=tmp_path / "source", engine="sqlite").start()
    try:
        source.client().create_secret(Name="kept", SecretString="sealed-value")
        baton(source, "admin", "backup", "--output", str(tmp_path / "good.backup"))
    finally:
        source.stop()
    good = (tmp_path / "good.backup").read_bytes()
    key = source.data_dir / "root.key"
    other = BatonServer(data_dir=tmp_path / "other", engine="sqlite").start()
    other.stop()
    cases = {
        "flipped": (good[:200] + bytes([good[200] ^ 0x40]) + good[201:], key,
                    "damaged or truncated: its checksum does not match"),
        "truncated": (good[: len(good) * 2 // 3], key, "damaged or truncated"),
        "wrong-key": (good, other.data_dir / "root.key", "cannot verify this backup"),
        "not-a-backup": (b"SQLite format 3\x00" + good[16:], key, "not a Baton backup"),
    }
    for case, (content, root_key, message) in cases.items():
        path = tmp_path / f"{case}.backup"
        path.write_bytes(content)
        target = tmp_path / f"target-{case}"
        run = restore(["--input", str(path), "--data-dir", str(target), "--root-key-file", str(root_key)], check=False)
        assert run.returncode != 0, case
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], (case, run.stderr)
        assert not (target / "baton.db").exists(), f"{case}: the target was not touched"
    # A store that holds anything is refused, and keeps what it holds.
    run = restore(["--input", str(tmp_path / "good.backup"), "--data-dir", str(other.data_dir),
                   "--root-key-file", str(other.data_dir / "root.key")], check=False)
    assert run.returncode != 0 and "cannot verify this backup" in run.stderr, run.stderr
    busy = tmp_path / "busy"
    first = restore(["--input", str(tmp_path / "good.backup"), "--data-dir", str(busy), "--root-key-file", str(key)])
    assert first.returncode == 0
    again = restore(["--input", str(tmp_path / "good.backup"), "--data-dir", str(busy)], check=False)
    assert again.returncode != 0 and "the target store is not empty" in again.stderr, again.stderr
    srv = BatonServer(data_dir=busy, engine="sqlite", account_id=source.account_id).start()
    try:
        assert srv.client().get_secret_value(SecretId="kept")["SecretString"] == "sealed-value"
    finally:
        srv.stop()


def test_only_a_principal_allowed_to_back_up_gets_a_backup(server):
    status, out = awsraw.call(server, "baton.CreatePrincipal", {"Name": "no-backups", "Kind": "service"})
    assert status == 200, out
    status, out = awsraw.call(server, "baton.CreateAccessKey", {"PrincipalName": "no-backups"})
    assert status == 200, out
    key = out["AccessKey"]
    env = env_for(server, key["AccessKeyId"], key["SecretAccessKey"])
    run = baton(server, "admin", "backup", "--output", "/tmp/never-written.backup", env=env, check=False)
    assert run.returncode != 0 and "baton:CreateBackup" in run.stderr, run.stderr
    assert not os.path.exists("/tmp/never-written.backup")
