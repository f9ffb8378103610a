"""The audit log: an entry per request with who, what, where and the outcome; a MAC chain that
`baton audit verify` checks, so editing, removing or swapping rows is detected; the refusal to
serve requests it cannot audit; the JSON-lines file; tail and search."""

import json
import sqlite3
import subprocess
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import awsraw
from conftest import ACCESS_KEY_ID, BATON, SECRET_ACCESS_KEY
from test_cli import env_for


def cli(server, *args, check=True):
    out = subprocess.run([str(BATON), *args], env=env_for(server), capture_output=True, text=True, timeout=60)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def entries(server, **filters):
    status, out = awsraw.call(server, "baton.ListAuditEntries", {"MaxResults": 1000, **filters})
    assert status == 200, out
    return out["Entries"]


def db(server):
    conn = sqlite3.connect(server.data_dir / "baton.db", timeout=10)
    conn.isolation_level = None
    return conn


def verify(server):
    return cli(server, "audit", "verify", "--output", "json", check=False)


def start(fresh, *args):
    srv = fresh()
    srv.extra_args = ["--audit-file", str(srv.data_dir.parent / f"audit-{srv.port}.jsonl"), *args]
    srv.start()
    sm = srv.client()
    sm.create_secret(Name="audited/one", SecretString="audit-log-must-never-hold-this")
    sm.get_secret_value(SecretId="audited/one")
    with pytest.raises(ClientError):
        sm.get_secret_value(SecretId="audited/missing")
    return srv, sm


def test_every_request_is_recorded_without_values(fresh):
    srv, sm = start(fresh)
    status, out = awsraw.call(srv, "secretsmanager.ListSecrets", {}, access_key="BTNNOSUCHKEY0000000")
    assert status == 400
    log = entries(srv)
    by_action = {}
    for e in log:
        by_action.setdefault(e["Action"], []).append(e)
    create = by_action["secretsmanager:CreateSecret"][0]
    assert create["Principal"] == f"arn:aws:iam::{srv.account_id}:root"
    assert create["Resource"] == "audited/one" and create["Decision"] == "allow"
    assert create["Outcome"] == "ok" and create["Status"] == 200
    assert create["SourceIp"] == "127.0.0.1" and create["Reason"] == "administrator"
    missing = [e for e in by_action["secretsmanager:GetSecretValue"] if e["Resource"] == "audited/missing"][0]
    assert missing["Outcome"] == "ResourceNotFoundException" and missing["Status"] == 400
    unauthenticated = by_action["secretsmanager:ListSecrets"][-1]
    assert unauthenticated["Principal"] == "" and unauthenticated["Decision"] == "none"
    assert unauthenticated["Outcome"] == "UnrecognizedClientException"
    assert unauthenticated["AccessKeyId"] == ""
    seqs = [e["Seq"] for e in log]
    assert seqs == list(range(1, len(seqs) + 1))
    raw = json.dumps(log)
    assert "audit-log-must-never-hold-this" not in raw


def test_denials_are_recorded_with_their_reason(fresh):
    srv, sm = start(fresh)
    status, _ = awsraw.call(srv, "baton.CreatePrincipal", {"Name": "weak"})
    assert status == 200
    key = awsraw.call(srv, "baton.CreateAccessKey", {"PrincipalName": "weak"})[1]["AccessKey"]
    weak = srv.client(access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"])
    with pytest.raises(ClientError):
        weak.get_secret_value(SecretId="audited/one")
    denied = entries(srv, Decision="deny")
    assert len(denied) == 1
    e = denied[0]
    assert e["Principal"] == f"arn:aws:iam::{srv.account_id}:user/weak"
    assert e["Action"] == "secretsmanager:GetSecretValue" and e["Resource"] == "audited/one"
    assert e["Outcome"] == "AccessDeniedException" and e["Reason"] == "no policy allows it"
    assert e["AccessKeyId"] == key["AccessKeyId"]


def test_verify_passes_on_an_untouched_log_and_names_where_its_chain_ends(fresh):
    srv, _ = start(fresh)
    conn = db(srv)
    (written,) = conn.execute("SELECT MAX(chain_seq) FROM audit_log").fetchone()
    out = verify(srv)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["Problems"] == [] and report["Checked"] >= 3
    assert report["Chains"] == 1 and report["Chain"] == "", "the embedded store keeps one chain"
    # The chain's end, as a backup names it: the position and the MAC stored there.
    (end,) = report["Ends"]
    assert end["Chain"] == "" and end["LastSeq"] >= written, (end, written)
    assert conn.execute("SELECT lower(hex(hash)) FROM audit_log WHERE chain = '' AND chain_seq = ?",
                        (end["LastSeq"],)).fetchall() == [(end["LastHash"],)], end
    conn.close()
    table = cli(srv, "audit", "verify").stdout
    assert "the audit chain is intact" in table, table
    (line,) = [l for l in table.splitlines() if l.startswith("audit chain end: ")]
    at, hash_hex = int(line.split()[3]), line.split()[5]
    assert at > end["LastSeq"] and len(hash_hex) == 64, "the first verify was audited after it"


def tamper_then_verify(srv, sql, *params):
    conn = db(srv)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(sql, params)
    conn.execute("COMMIT")
    conn.close()
    out = verify(srv)
    assert out.returncode == 1, out.stdout
    assert "tampered" in out.stderr
    return json.loads(out.stdout)["Problems"]


def test_an_edited_entry_is_detected(fresh):
    srv, _ = start(fresh)
    problems = tamper_then_verify(srv, "UPDATE audit_log SET decision = 'allow', outcome = 'ok' WHERE seq = 3")
    assert [(p["Seq"], "edited" in p["Problem"]) for p in problems] == [(3, True)]


def test_a_removed_entry_is_detected(fresh):
    srv, _ = start(fresh)
    problems = tamper_then_verify(srv, "DELETE FROM audit_log WHERE seq = 2")
    assert {p["Seq"] for p in problems} == {3}
    text = " ".join(p["Problem"] for p in problems)
    assert "entries 2 to 2 are missing" in text and "does not link" in text


def test_two_swapped_entries_are_detected(fresh):
    srv, _ = start(fresh)
    conn = db(srv)
    columns = "at, request_id, principal, access_key_id, action, resource, decision, outcome, status, " \
              "source_ip, reason, prev_hash, hash"
    a = conn.execute(f"SELECT {columns} FROM audit_log WHERE seq = 2").fetchone()
    b = conn.execute(f"SELECT {columns} FROM audit_log WHERE seq = 3").fetchone()
    assignments = ", ".join(f"{c.strip()} = ?" for c in columns.split(","))
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(f"UPDATE audit_log SET {assignments} WHERE seq = 2", b)
    conn.execute(f"UPDATE audit_log SET {assignments} WHERE seq = 3", a)
    conn.execute("COMMIT")
    conn.close()
    out = verify(srv)
    assert out.returncode == 1
    problems = json.loads(out.stdout)["Problems"]
    assert {2, 3} <= {p["Seq"] for p in problems}


def test_a_log_cut_short_is_detected(fresh):
    srv, sm = start(fresh)
    last = entries(srv)[-1]["Seq"]
    conn = db(srv)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("DELETE FROM audit_log WHERE seq > ?", (last - 2,))
    conn.execute("COMMIT")
    conn.close()
    sm.list_secrets()  # appends after the cut, re-using seqs the node had already written
    out = verify(srv)
    assert out.returncode == 1
    problems = json.loads(out.stdout)["Problems"]
    assert any("removed from its end" in p["Problem"] for p in problems), problems


def test_a_rechained_forgery_fails_without_the_root_key(fresh):
    """Someone with write access to the database but not the root key recomputes the chain
    with plain SHA-256: the MACs still do not match."""
    import hashlib
    srv, _ = start(fresh)
    conn = db(srv)
    rows = conn.execute("SELECT seq, prev_hash, hash FROM audit_log ORDER BY seq").fetchall()
    conn.execute("BEGIN IMMEDIATE")
    prev = b""
    for seq, _, _ in rows:
        forged = hashlib.sha256(prev + str(seq).encode()).digest()
        conn.execute("UPDATE audit_log SET prev_hash = ?, hash = ?, decision = 'allow' WHERE seq = ?",
                     (prev, forged, seq))
        prev = forged
    conn.execute("COMMIT")
    conn.close()
    out = verify(srv)
    assert out.returncode == 1
    assert len(json.loads(out.stdout)["Problems"]) >= len(rows)


def test_the_jsonl_file_holds_the_same_chain(fresh):
    srv, sm = start(fresh)
    sm.list_secrets()
    srv.stop()  # flushes the log
    lines = [json.loads(l) for l in (srv.data_dir.parent / f"audit-{srv.port}.jsonl").read_text().splitlines()]
    conn = db(srv)
    rows = {seq: h.hex() for seq, h in conn.execute("SELECT seq, hash FROM audit_log")}
    assert len(lines) == len(rows) and all(rows[l["seq"]] == l["hash"] for l in lines)
    for before, after in zip(lines, lines[1:]):
        assert after["prev_hash"] == before["hash"]
    assert "audit-log-must-never-hold-this" not in json.dumps(lines)


def block_audit_writes(srv):
    conn = db(srv)
    conn.execute("CREATE TRIGGER block_audit BEFORE INSERT ON audit_log "
                 "BEGIN SELECT RAISE(ABORT, 'audit blocked by the test'); END")
    conn.close()


def unblock_audit_writes(srv):
    conn = db(srv)
    conn.execute("DROP TRIGGER block_audit")
    conn.close()


def test_required_mode_refuses_what_it_cannot_audit(fresh):
    srv, _ = start(fresh)
    # One attempt per call: a retry would be refused before it runs, which is the next check.
    sm = boto3.client("secretsmanager", endpoint_url=srv.endpoint, region_name="us-east-1",
                      aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY,
                      config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))
    block_audit_writes(srv)
    with pytest.raises(ClientError) as e:
        sm.get_secret_value(SecretId="audited/one")
    error = e.value.response
    assert error["Error"]["Code"] == "InternalServiceError"
    assert "audit entry could not be written" in error["Error"]["Message"]
    assert "audit-log-must-never-hold-this" not in json.dumps(error, default=str)
    # While the log cannot be written, requests are refused before they run.
    with pytest.raises(ClientError) as e:
        sm.put_secret_value(SecretId="audited/one", SecretString="must-not-be-stored")
    assert "configured to refuse" in e.value.response["Error"]["Message"]
    unblock_audit_writes(srv)
    deadline = time.time() + 10
    while True:
        try:
            sm.list_secrets()
            break
        except ClientError:
            assert time.time() < deadline, "requests did not resume after the audit log recovered"
            time.sleep(0.1)
    versions = sm.list_secret_version_ids(SecretId="audited/one")["Versions"]
    assert len(versions) == 1, "the refused PutSecretValue must not have run"
    assert verify(srv).returncode == 0


def test_best_effort_mode_serves_and_counts_what_it_cannot_audit(fresh):
    srv, sm = start(fresh, "--audit-mode", "best-effort")
    block_audit_writes(srv)
    for _ in range(3):
        assert sm.get_secret_value(SecretId="audited/one")["SecretString"]
    text = srv.metrics()
    assert any(line.startswith("baton_audit_failures_total") and float(line.split()[-1]) >= 1
               for line in text.splitlines()), text
    unblock_audit_writes(srv)


def test_an_unknown_audit_mode_is_refused_at_start(fresh):
    srv = fresh(extra_args=["--audit-mode", "sometimes"])
    with pytest.raises(RuntimeError) as e:
        srv.start()
    assert "audit mode must be" in str(e.value)


def test_tail_and_search(fresh):
    srv, sm = start(fresh)
    tail = cli(srv, "audit", "tail", "-n", "2").stdout.strip().splitlines()
    assert len(tail) == 2
    found = cli(srv, "audit", "search", "--action", "secretsmanager:Get*", "--output", "json").stdout
    lines = [json.loads(l) for l in found.splitlines()]
    assert lines and all(l["Action"] == "secretsmanager:GetSecretValue" for l in lines)
    assert {l["Resource"] for l in lines} == {"audited/one", "audited/missing"}
    none = cli(srv, "audit", "search", "--decision", "deny").stdout
    assert none == ""
    bad = cli(srv, "audit", "search", "--since", "yesterday", check=False)
    assert bad.returncode != 0 and "RFC 3339" in bad.stderr


def test_one_chain_is_listed_by_position_with_every_chains_end(fresh):
    """`Chain` lists one chain by position (`AfterSeq`/`NextSeq` are `ChainSeq`s), and
    `IncludeChains` names every chain with its end, read before the page; an unknown chain is
    refused by name."""
    srv, sm = start(fresh)
    status, out = awsraw.call(srv, "baton.ListAuditEntries",
                              {"Chain": "", "AfterSeq": 1, "MaxResults": 2, "IncludeChains": True})
    assert status == 200, out
    assert [e["ChainSeq"] for e in out["Entries"]] == [2, 3] and out["NextSeq"] == 3, out
    (shared,) = out["Chains"]
    assert shared["Chain"] == "" and shared["LastSeq"] >= 3, out
    status, rest = awsraw.call(srv, "baton.ListAuditEntries", {"Chain": "", "AfterSeq": out["NextSeq"]})
    assert status == 200 and "Chains" not in rest, rest
    assert rest["Entries"][0]["ChainSeq"] == 4, rest
    assert rest["Entries"][-1]["ChainSeq"] >= shared["LastSeq"], (rest, shared)
    status, err = awsraw.call(srv, "baton.ListAuditEntries", {"Chain": "node-nope"})
    assert status == 400 and "no chain named \"node-nope\"" in err["message"], err


def test_the_leak_check_finds_a_planted_value(tmp_path):
    """The end-of-suite scan (conftest.pytest_sessionfinish) is only as good as its matcher."""
    from conftest import remember_sensitive, scan_for_leaks
    log = tmp_path / "baton.log"
    log.write_bytes(b"INFO request ok\nERROR oops value=hunter2-planted-value\n")
    values = set()
    import conftest
    before = set(conftest.SENSITIVE)
    remember_sensitive({"SecretValues": [{"SecretString": "hunter2-planted-value"}], "SecretString": "short"})
    values = conftest.SENSITIVE - before
    conftest.SENSITIVE.difference_update(values)  # planted here, not a leak of the suite
    assert values == {b"hunter2-planted-value"}, "nested members are remembered; short ones are not"
    assert scan_for_leaks([log], values) == [(str(log), b"hunter2-planted-value")]
    assert scan_for_leaks([log], {b"not-in-the-log"}) == []
