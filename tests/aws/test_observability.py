"""Rotation observability: the metrics a running server exports while rotations succeed, wait
and stop, and the shipped Prometheus rules, checked and unit-tested with promtool."""

import re
import shutil
import subprocess
import time

import pytest

import awsraw
from conftest import REPO


def sample(text, name, **labels):
    """The value of one series in Prometheus text, or None."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return None


def wait_rotation(srv, name, statuses, timeout=30):
    deadline = time.time() + timeout
    while True:
        status, r = awsraw.call(srv, "baton.DescribeRotation", {"SecretId": name})
        assert status == 200, r
        if r.get("Status") in statuses:
            return r
        assert time.time() < deadline, r
        time.sleep(0.1)


def test_rotation_metrics_count_phases_gates_failures_and_outcomes(fresh):
    srv = fresh()
    srv.start()
    sm = srv.client()
    lam = f"arn:aws:lambda:us-east-1:{srv.account_id}:function:"
    # One rotation that succeeds through both gates, having waited at the propagation gate.
    sm.create_secret(Name="rot-ok-7a", SecretString="v0")
    awsraw.call(srv, "baton.PutRotationPolicy", {"SecretId": "rot-ok-7a", "PropagationDelaySeconds": 2, "RetireGraceSeconds": 0})
    sm.get_secret_value(SecretId="rot-ok-7a")  # a plain reader: the gate waits T
    sm.rotate_secret(SecretId="rot-ok-7a", RotationLambdaARN=lam + "baton-random")
    # One that stops: a database rotator on a secret that is not a database secret.
    sm.create_secret(Name="rot-bad-7a", SecretString='{"engine":"oracle","host":"h","username":"u","password":"p"}')
    awsraw.call(srv, "baton.PutRotationPolicy", {"SecretId": "rot-bad-7a", "MaxAttempts": 1})
    sm.rotate_secret(SecretId="rot-bad-7a", RotationLambdaARN=lam + "baton-postgres")
    # One held at its gate for the rest of the test.
    sm.create_secret(Name="rot-held-7a", SecretString="v0")
    awsraw.call(srv, "baton.PutRotationPolicy", {"SecretId": "rot-held-7a", "PropagationDelaySeconds": 600})
    sm.get_secret_value(SecretId="rot-held-7a")
    sm.rotate_secret(SecretId="rot-held-7a", RotationLambdaARN=lam + "baton-random")

    wait_rotation(srv, "rot-bad-7a", ("Stopped",))
    wait_rotation(srv, "rot-ok-7a", ("Succeeded",))
    text = srv.metrics()
    assert sample(text, "baton_rotations_ended_total", outcome="succeeded") == 1, text
    assert sample(text, "baton_rotations_ended_total", outcome="stopped") == 1
    assert sample(text, "baton_rotation_step_failures_total", rotator="baton-postgres", step="create") == 1
    assert sample(text, "baton_rotations", phase="started", status="stopped") == 1
    assert sample(text, "baton_rotations", phase="tested", status="running") == 1, "held at the propagation gate"
    assert sample(text, "baton_rotations", phase="retired", status="running") == 0
    # The propagation gate of "rot-ok-7a" waited about T = 2 s; the drain gate passed at once.
    count = sample(text, "baton_gate_wait_seconds_count", gate="propagation")
    total = sample(text, "baton_gate_wait_seconds_sum", gate="propagation")
    assert count == 1 and 1.5 <= total <= 10, (count, total)
    assert sample(text, "baton_dead_letters") == 0 and sample(text, "baton_event_delivery_backlog") == 0
    assert sample(text, "baton_consumers", state="live") == 0
    assert sample(text, "baton_ready") == 1
    # No series names a secret.
    for name in ("rot-ok-7a", "rot-bad-7a", "rot-held-7a", srv.account_id):
        assert name not in text


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian's prometheus package); .ci/run installs it")
def test_the_shipped_alert_rules_are_valid_and_fire_as_their_unit_tests_say():
    rules = REPO / "deploy" / "prometheus" / "alerts.yml"
    tests = REPO / "deploy" / "prometheus" / "alerts.test.yml"
    check = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS" in check.stdout
    unit = subprocess.run([PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True, cwd=tests.parent)
    assert unit.returncode == 0, unit.stdout + unit.stderr
    assert "SUCCESS" in unit.stdout


def test_the_grafana_dashboard_and_the_systemd_unit_are_well_formed():
    import json

    dashboard = json.loads((REPO / "deploy" / "grafana" / "baton.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs and all("baton_" in e for e in exprs), exprs
    unit = (REPO / "deploy" / "systemd" / "baton.service").read_text()
    for setting in ("NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectSystem=strict", "StateDirectory=baton"):
        assert setting in unit, setting
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit was checked for its settings only")
    # Verified as installed: with ExecStart naming a binary that exists (the one under test).
    import tempfile

    from conftest import BATON

    with tempfile.TemporaryDirectory() as d:
        copy = f"{d}/baton.service"
        with open(copy, "w") as f:
            f.write(unit.replace("/usr/local/bin/baton", str(BATON)))
        run = subprocess.run([analyze, "verify", copy], capture_output=True, text=True)
    assert run.returncode == 0 and not (run.stdout + run.stderr).strip(), run.stdout + run.stderr
