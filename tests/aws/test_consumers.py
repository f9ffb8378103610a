"""Reporting consumers and watches: rotation gates pass on what consumers hold rather than on a
blind delay, a consumer that stays behind holds the gate, a consumer that dies drops out after
its lease, and a long-poll watch wakes on a change."""

import json
import threading
import time

import awsraw
from test_cli import baton

HOUR = 3600


def call(server, target, payload):
    status, body = awsraw.call(server, target, payload)
    assert status == 200, (target, body)
    return body


def fetch(server, name, app, instance, lease=30):
    """A Baton client's keyring fetch: also a report of what it now holds."""
    return call(server, "baton.GetSecretKeyring", {
        "SecretId": name, "Consumer": {"Application": app, "InstanceId": instance}, "LeaseSeconds": lease})


def describe(server, name):
    return call(server, "baton.DescribeRotation", {"SecretId": name})


def wait_until(predicate, timeout=20, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def start_rotation(server, sm, name, **policy):
    call(server, "baton.PutRotationPolicy", {"SecretId": name, "RetireGraceSeconds": 0, **policy})
    lam = f"arn:aws:lambda:us-east-1:{server.account_id}:function:baton-random"
    return sm.rotate_secret(SecretId=name, RotationLambdaARN=lam)["VersionId"]


def test_gates_pass_on_acknowledgements_long_before_the_propagation_delay(server, sm, unique_name):
    old = sm.create_secret(Name=unique_name, SecretString="v1-value-that-is-long-enough")["VersionId"]
    for instance in ("i-1", "i-2"):
        assert fetch(server, unique_name, "verifier", instance)["Current"]["VersionId"] == old
    started = time.time()
    new = start_rotation(server, sm, unique_name, PropagationDelaySeconds=HOUR, MaxGateWaitSeconds=HOUR)
    # Both consumers still hold the old keyring: the propagation gate waits on them.
    waiting = wait_until(lambda: (r := describe(server, unique_name))["Phase"] == "tested" and r, what="tested")
    assert any("2 reporting consumer(s)" in e["Event"] for e in waiting["Timeline"]), waiting["Timeline"]
    listed = call(server, "baton.ListConsumers", {"SecretId": unique_name})
    assert [(c["Application"], c["InstanceId"], c["Live"]) for c in listed["Consumers"]] == [
        ("verifier", "i-1", True), ("verifier", "i-2", True)]
    assert all(new not in c["AcceptedVersionIds"] for c in listed["Consumers"])
    # One acknowledges: still held by the other.
    ring = fetch(server, unique_name, "verifier", "i-1")
    assert [v["VersionId"] for v in ring["Accepted"]] == [new, old]
    time.sleep(0.3)
    assert describe(server, unique_name)["Phase"] == "tested"
    # Both accept the new version: promoted at once.
    fetch(server, unique_name, "verifier", "i-2")
    wait_until(lambda: describe(server, unique_name)["Phase"] == "promoted", what="promoted")
    # The drain gate needs both to use the new version.
    for instance in ("i-1", "i-2"):
        assert fetch(server, unique_name, "verifier", instance)["Current"]["VersionId"] == new
    done = wait_until(lambda: (r := describe(server, unique_name))["Status"] == "Succeeded" and r, what="success")
    elapsed = time.time() - started
    assert elapsed < 60, f"gated on acknowledgements, not the {HOUR} s delay ({elapsed:.1f} s)"
    assert [e["Event"] for e in done["Timeline"] if "gate passed" in e["Event"]], done["Timeline"]
    assert all("forced" not in e["Event"] for e in done["Timeline"])


def test_a_heartbeat_reports_holdings_and_a_dead_consumer_drops_out_after_its_lease(server, sm, unique_name):
    old = sm.create_secret(Name=unique_name, SecretString="v1-value-that-is-long-enough")["VersionId"]
    fetch(server, unique_name, "signer", "alive")
    fetch(server, unique_name, "signer", "doomed", lease=5)  # then it is killed: no more reports
    new = start_rotation(server, sm, unique_name, PropagationDelaySeconds=HOUR, MaxGateWaitSeconds=HOUR)
    wait_until(lambda: describe(server, unique_name)["Phase"] == "tested", what="tested")
    # The live one reports by heartbeat (ReportConsumer) instead of fetching.
    report = call(server, "baton.ReportConsumer", {
        "Application": "signer", "InstanceId": "alive", "LeaseSeconds": 30,
        "Holdings": [{"SecretId": unique_name, "CurrentVersionId": old, "AcceptedVersionIds": [new, old]},
                     {"SecretId": unique_name + "/does-not-exist", "AcceptedVersionIds": []}]})
    assert report["LeaseSeconds"] == 30 and report["UnknownSecretIds"] == [unique_name + "/does-not-exist"]
    time.sleep(0.5)
    assert describe(server, unique_name)["Phase"] == "tested", "the doomed consumer still holds the gate"
    # After its 5 s lease the dead consumer no longer counts, and the gate passes.
    wait_until(lambda: describe(server, unique_name)["Phase"] in ("promoted", "drained", "retired"),
               timeout=15, what="the gate to pass after the lease")
    doomed = [c for c in call(server, "baton.ListConsumers", {"SecretId": unique_name})["Consumers"]
              if c["InstanceId"] == "doomed"]
    assert doomed and doomed[0]["Live"] is False
    call(server, "baton.ReportConsumer", {
        "Application": "signer", "InstanceId": "alive",
        "Holdings": [{"SecretId": unique_name, "CurrentVersionId": new, "AcceptedVersionIds": [new, old]}]})
    wait_until(lambda: describe(server, unique_name)["Status"] == "Succeeded", what="success")


def test_a_consumer_that_stays_behind_holds_the_gate_raises_an_alert_and_only_force_overrides(
        server, sm, unique_name):
    sm.create_secret(Name=unique_name, SecretString="v1-value-that-is-long-enough")
    fetch(server, unique_name, "legacy", "cut-off", lease=600)
    start_rotation(server, sm, unique_name, PropagationDelaySeconds=1, MaxGateWaitSeconds=1)
    # Past T and past the maximum wait, the live consumer that never moved still holds the gate.
    alerted = wait_until(
        lambda: (r := describe(server, unique_name)) and any("ALERT" in e["Event"] for e in r["Timeline"]) and r,
        timeout=15, what="an alert")
    assert alerted["Phase"] == "tested" and alerted["Status"] == "InProgress"
    time.sleep(1.5)
    assert describe(server, unique_name)["Phase"] == "tested", "T passing does not release a held gate"
    baton(server, "rotation", "advance", unique_name, "--force")
    done = wait_until(lambda: (r := describe(server, unique_name))["Phase"] != "tested" and r, what="forced pass")
    assert any("forced" in e["Event"] for e in done["Timeline"]), done["Timeline"]


def test_a_watch_returns_at_once_for_a_stale_revision_and_wakes_on_a_change(server, sm, unique_name):
    sm.create_secret(Name=unique_name, SecretString="first")
    other = unique_name + "/other"
    sm.create_secret(Name=other, SecretString="unrelated")
    ring = call(server, "baton.GetSecretKeyring", {"SecretId": unique_name})
    revision = ring["Revision"]
    other_revision = call(server, "baton.GetSecretKeyring", {"SecretId": other})["Revision"]
    # An unknown revision answers at once.
    stale = call(server, "baton.WatchSecrets", {"Secrets": [{"SecretId": unique_name, "Revision": "0"}]})
    assert stale["Changed"] == [{"SecretId": unique_name, "ARN": ring["ARN"], "Revision": revision,
                                 "Deleted": False}]
    # Nothing changes: empty after the wait.
    started = time.time()
    quiet = call(server, "baton.WatchSecrets", {
        "Secrets": [{"SecretId": unique_name, "Revision": revision}], "WaitSeconds": 1})
    assert quiet["Changed"] == [] and time.time() - started >= 1
    # Bookkeeping writes (a description) do not wake watchers; a new value does.
    result = {}

    def watch():
        result["body"] = call(server, "baton.WatchSecrets", {
            "Secrets": [{"SecretId": other, "Revision": other_revision},
                        {"SecretId": unique_name, "Revision": revision}], "WaitSeconds": 8})
        result["at"] = time.time()

    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(0.3)
    sm.update_secret(SecretId=unique_name, Description="bookkeeping only")
    time.sleep(0.3)
    assert watcher.is_alive(), "a description change does not wake a watch"
    put = sm.put_secret_value(SecretId=unique_name, SecretString="second")
    changed_at = time.time()
    watcher.join(timeout=10)
    changed = result["body"]["Changed"]
    assert [c["SecretId"] for c in changed] == [unique_name]
    assert changed[0]["Revision"] != revision
    assert result["at"] - changed_at < 5, "woken by the change, not by the 8 s timeout"
    new_ring = call(server, "baton.GetSecretKeyring", {"SecretId": unique_name})
    assert new_ring["Revision"] == changed[0]["Revision"] and new_ring["Current"]["VersionId"] == put["VersionId"]
    # A deleted secret is reported as such.
    sm.delete_secret(SecretId=other, ForceDeleteWithoutRecovery=True)
    gone = call(server, "baton.WatchSecrets", {"Secrets": [{"SecretId": other, "Revision": other_revision}]})
    assert gone["Changed"] == [{"SecretId": other, "Deleted": True}]


def test_a_watch_answers_with_keyrings_and_the_next_watch_reports_them(server, sm, unique_name):
    """With `IncludeKeyrings`, a watch answers with the changed secret's keyring and names it in
    its audit entry, but does not count it as held: the answer may never reach the consumer.
    The consumer's next watch reports what it installed (`Holdings`), and that is recorded on
    arrival. A caller allowed to watch but neither to read the keyring nor to report gets the
    change without the keyring, its holdings are not recorded, and its watch is still audited
    as allowed, naming why."""
    sm.create_secret(Name=unique_name, SecretString="first")
    first = fetch(server, unique_name, "watcher", "i-1")
    revision = first["Revision"]
    result = {}

    def watch(access_key=None, secret_key=None, key="body", holdings=None, wait=8):
        request = {"Secrets": [{"SecretId": unique_name, "Revision": revision}], "WaitSeconds": wait,
                   "IncludeKeyrings": True,
                   "Consumer": {"Application": "watcher", "InstanceId": "i-1"}, "LeaseSeconds": 30}
        if holdings is not None:
            request["Holdings"] = holdings
        status, body = awsraw.call(server, "baton.WatchSecrets", request,
                                   access_key=access_key, secret_key=secret_key)
        assert status == 200, body
        result[key] = body

    def held():
        (consumer,) = call(server, "baton.ListConsumers", {"SecretId": unique_name})["Consumers"]
        return consumer["CurrentVersionId"]

    def last_watch(principal_suffix=""):
        watches = [e for e in call(server, "baton.ListAuditEntries", {"AfterSeq": -50, "MaxResults": 50})["Entries"]
                   if e["Action"] == "baton:WatchSecrets" and e["Principal"].endswith(principal_suffix)]
        assert watches
        return watches[-1]

    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(0.3)
    put = sm.put_secret_value(SecretId=unique_name, SecretString="second")
    watcher.join(timeout=10)
    (changed,) = result["body"]["Changed"]
    ring = changed["Keyring"]
    assert ring["Current"]["VersionId"] == put["VersionId"] and ring["Current"]["SecretString"] == "second"
    assert ring["Revision"] == changed["Revision"] != revision
    assert {v["SecretString"] for v in ring["Accepted"]} == {"first", "second"}
    entry = last_watch()
    assert f"answered with the keyrings of {unique_name}" in entry["Reason"], entry
    assert entry["Decision"] == "allow"
    # Answered is not held: the consumer still counts as holding what it fetched.
    assert held() == first["Current"]["VersionId"]

    # The next watch says what it installed; that is the report.
    holdings = [{"SecretId": unique_name, "CurrentVersionId": ring["Current"]["VersionId"],
                 "AcceptedVersionIds": [v["VersionId"] for v in ring["Accepted"]]}]
    revision = ring["Revision"]
    watch(holdings=holdings, wait=0)
    assert result["body"]["Changed"] == []
    assert held() == put["VersionId"]
    entry = last_watch()
    assert f"recorded the holdings of {unique_name} (baton:ReportConsumer)" in entry["Reason"], entry

    # Allowed to watch, not to read the keyring or to report: the change comes without the
    # keyring, and the holdings it brings are not recorded.
    name = unique_name.replace("/", "-")[:50] + "-w"
    for target, body in [("baton.CreatePrincipal", {"Name": name, "Kind": "service"}),
                         ("baton.PutPrincipalPolicy", {"PrincipalName": name, "PolicyName": "watch",
                                                       "PolicyDocument": json.dumps({
                                                           "Version": "2012-10-17", "Statement": [{
                                                               "Effect": "Allow", "Action": "baton:WatchSecrets",
                                                               "Resource": "*"}]})})]:
        call(server, target, body)
    key = call(server, "baton.CreateAccessKey", {"PrincipalName": name})["AccessKey"]
    revision = first["Revision"]
    stale = [{"SecretId": unique_name, "CurrentVersionId": first["Current"]["VersionId"]}]
    watch(key["AccessKeyId"], key["SecretAccessKey"], key="weak", holdings=stale)
    (changed,) = result["weak"]["Changed"]
    assert "Keyring" not in changed and changed["Revision"] == ring["Revision"], changed
    entry = last_watch(name)
    assert entry["Decision"] == "allow" and "answered with the keyrings" not in entry["Reason"], entry
    assert "its holdings were not recorded" in entry["Reason"], entry
    assert held() == put["VersionId"], "the refused report changed nothing"


def test_consumer_and_watch_requests_are_validated(server, sm, unique_name):
    sm.create_secret(Name=unique_name, SecretString="x")
    cases = [
        ("baton.ReportConsumer", {"InstanceId": "i", "Holdings": []}, "ValidationException", "application"),
        ("baton.ReportConsumer", {"Application": "a", "InstanceId": "i", "LeaseSeconds": 4},
         "InvalidParameterException", "LeaseSeconds must be between 5 and 600"),
        ("baton.ReportConsumer", {"Application": "a", "InstanceId": "i\n", "Holdings": []},
         "InvalidParameterException", "InstanceId must be 1 to 128 characters"),
        ("baton.ReportConsumer", {"Application": "a", "InstanceId": "i",
                                  "Holdings": [{"SecretId": unique_name, "CurrentVersionId": "short"}]},
         "InvalidParameterException", "'short' is not a version id"),
        ("baton.WatchSecrets", {"Secrets": []}, "InvalidParameterException", "Secrets must name 1 to 1000"),
        ("baton.WatchSecrets", {"Secrets": [{"SecretId": unique_name}], "WaitSeconds": 600},
         "InvalidParameterException", "WaitSeconds must be between 0 and"),
        ("baton.GetSecretKeyring", {"SecretId": unique_name, "Consumer": {"Application": "a"}},
         "ValidationException", "InstanceId"),
        ("baton.WatchSecrets", {"Secrets": [{"SecretId": unique_name}],
                                "Holdings": [{"SecretId": unique_name}]},
         "InvalidParameterException", "Holdings needs Consumer"),
        ("baton.WatchSecrets", {"Secrets": [{"SecretId": unique_name}], "LeaseSeconds": 4,
                                "Consumer": {"Application": "a", "InstanceId": "i"},
                                "Holdings": [{"SecretId": unique_name}]},
         "InvalidParameterException", "LeaseSeconds must be between 5 and 600"),
    ]
    for target, payload, error_type, message in cases:
        status, body = awsraw.call(server, target, payload)
        assert status == 400 and awsraw.error_of(body)[0] == error_type, (payload, body)
        assert message.lower() in awsraw.error_of(body)[1].lower(), (payload, body)
    # Nothing was recorded by the refused reports.
    assert call(server, "baton.ListConsumers", {"SecretId": unique_name})["Consumers"] == []
