"""Webhook delivery of events: signed, in order per secret, at least once across a crash,
failures dead-lettered and redelivered, and a slow endpoint delaying nobody else."""

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import awsraw
from conftest import free_port


class Receiver:
    """A local HTTP receiver. mode: 'ok' (200), 'fail' (500) or a delay in seconds, then 200."""

    def __init__(self, mode="ok"):
        self.mode, self.received, self.lock = mode, [], threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                mode = receiver.mode
                if isinstance(mode, (int, float)):
                    time.sleep(mode)
                status = 500 if mode == "fail" else 200
                if status == 200:
                    with receiver.lock:
                        receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}/events"

    def events(self):
        with self.lock:
            return [json.loads(body) for _, body in self.received]

    def stop(self):
        self.server.shutdown()


@pytest.fixture
def receivers():
    made = []

    def make(mode="ok"):
        r = Receiver(mode)
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


def subscribe(server, url, **extra):
    status, sub = awsraw.call(server, "baton.CreateSubscription", {"Url": url, **extra})
    assert status == 200, sub
    return sub


def wait_for(predicate, timeout=20, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out: {what}")


def test_events_are_delivered_signed_and_in_order_per_secret(server, sm, unique_name, receivers):
    r = receivers()
    sub = subscribe(server, r.url, SecretNamePrefix=unique_name)
    assert sub["SigningSecret"].startswith("bws_") and sub["SubscriptionId"].startswith("sub-")
    a, b = unique_name + "/a", unique_name + "/b"
    for name in (a, b):
        sm.create_secret(Name=name, SecretString="v0")
    for i in range(5):
        sm.put_secret_value(SecretId=a, SecretString=f"a{i}")
        sm.put_secret_value(SecretId=b, SecretString=f"b{i}")
    sm.create_secret(Name="elsewhere-" + unique_name.replace("/", "-"), SecretString="x")  # filtered out
    wait_for(lambda: len(r.events()) == 12, what="12 deliveries")
    for name in (a, b):
        mine = [e for e in r.events() if e["detail"]["baton"]["secretName"] == name]
        assert [e["detail"]["eventName"] for e in mine] == ["CreateSecret"] + ["PutSecretValue"] * 5
        seqs = [e["detail"]["baton"]["seq"] for e in mine]
        assert seqs == sorted(seqs), "in order per secret"
    for headers, body in r.received:
        expected = "v1=" + hmac.new(sub["SigningSecret"].encode(), headers["baton-timestamp"].encode() + b"." + body,
                                    hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["baton-signature"], expected)
        assert abs(time.time() - int(headers["baton-timestamp"])) < 60
    listed = awsraw.call(server, "baton.ListSubscriptions", {})[1]["Subscriptions"]
    assert any(s["SubscriptionId"] == sub["SubscriptionId"] and "SigningSecret" not in s for s in listed)
    awsraw.call(server, "baton.DeleteSubscription", {"SubscriptionId": sub["SubscriptionId"]})


def test_a_failing_endpoint_goes_to_dead_letters_and_is_redelivered(server, sm, unique_name, receivers):
    r = receivers("fail")
    sub = subscribe(server, r.url, SecretNamePrefix=unique_name, MaxAttempts=2)
    sm.create_secret(Name=unique_name, SecretString="v0")

    def letters():
        status, body = awsraw.call(server, "baton.ListDeadLetters", {"SubscriptionId": sub["SubscriptionId"]})
        assert status == 200, body
        return body["DeadLetters"]

    wait_for(lambda: letters(), what="a dead letter")
    letter = letters()[0]
    assert letter["EventName"] == "CreateSecret" and letter["Attempts"] == 2 and letter["LastError"] == "delivery failed"
    # The queue moved on: later events are not held behind the dead one.
    r.mode = "ok"
    sm.put_secret_value(SecretId=unique_name, SecretString="v1")
    wait_for(lambda: len(r.events()) == 1, what="the next event")
    assert r.events()[0]["detail"]["eventName"] == "PutSecretValue"
    status, redone = awsraw.call(server, "baton.RedeliverDeadLetters", {"SubscriptionId": sub["SubscriptionId"]})
    assert status == 200 and redone["Redelivered"] == 1 and redone["StillFailing"] == [], redone
    assert [e["detail"]["eventName"] for e in r.events()] == ["PutSecretValue", "CreateSecret"]
    assert letters() == []
    awsraw.call(server, "baton.DeleteSubscription", {"SubscriptionId": sub["SubscriptionId"]})


def test_a_slow_endpoint_delays_no_other(server, sm, unique_name, receivers):
    slow, fast = receivers(2.0), receivers()
    subs = [subscribe(server, x.url, SecretNamePrefix=unique_name) for x in (slow, fast)]
    sm.create_secret(Name=unique_name, SecretString="v0")
    for i in range(4):
        sm.put_secret_value(SecretId=unique_name, SecretString=f"v{i + 1}")
    wait_for(lambda: len(fast.events()) == 5, timeout=5, what="the fast endpoint's 5 events")
    assert len(slow.events()) < 5, "the slow endpoint is still working through its queue"
    wait_for(lambda: len(slow.events()) == 5, timeout=30, what="the slow endpoint catching up")
    for s in subs:
        awsraw.call(server, "baton.DeleteSubscription", {"SubscriptionId": s["SubscriptionId"]})


def test_delivery_is_at_least_once_across_a_sigkill(fresh, receivers):
    r = receivers("fail")
    srv = fresh().start()
    sm = srv.client()
    subscribe(srv, r.url, MaxAttempts=10)
    created = sm.create_secret(Name="crash/secret", SecretString="v0")
    time.sleep(1.5)  # delivery is being retried: committed, not yet delivered
    srv.process.kill()
    srv.process.wait()
    assert r.events() == []
    r.mode = "ok"
    srv.start()
    wait_for(lambda: r.events(), what="the event after the restart")
    assert r.events()[0]["detail"]["eventName"] == "CreateSecret"
    assert r.events()[0]["resources"] == [created["ARN"]]


def test_subscriptions_are_validated(server):
    for payload, message in [
        ({"Url": "http://example.com/hook"}, "plain http is allowed only to a loopback address"),
        ({"Url": "https://example.com/hook", "MaxAttempts": 11}, "MaxAttempts must be between 1 and 10"),
        ({"Url": "https://example.com/hook", "TagValue": "x"}, "TagValue needs a TagKey"),
    ]:
        status, body = awsraw.call(server, "baton.CreateSubscription", payload)
        assert status == 400 and message in awsraw.error_of(body)[1], body
    status, body = awsraw.call(server, "baton.DeleteSubscription", {"SubscriptionId": "sub-nope"})
    assert status == 400 and awsraw.error_of(body)[0] == "ResourceNotFoundException", body


def test_the_cli_subscribes_shows_dead_letters_and_redelivers(server, sm, unique_name, receivers):
    from test_cli import baton
    r = receivers("fail")
    out = baton(server, "events", "subscribe", r.url, "--prefix", unique_name, "--max-attempts", "1",
                "--output", "json").stdout
    sub = json.loads(out)
    assert sub["SigningSecret"].startswith("bws_")
    assert sub["SubscriptionId"] in baton(server, "events", "subscriptions").stdout
    sm.create_secret(Name=unique_name, SecretString="v0")
    wait_for(lambda: "CreateSecret" in baton(server, "events", "dead-letters", "--subscription-id",
                                             sub["SubscriptionId"]).stdout, what="a dead letter")
    r.mode = "ok"
    assert "redelivered 1" in baton(server, "events", "redeliver", sub["SubscriptionId"]).stdout
    assert [e["detail"]["eventName"] for e in r.events()] == ["CreateSecret"]
    baton(server, "events", "unsubscribe", sub["SubscriptionId"])
    assert sub["SubscriptionId"] not in baton(server, "events", "subscriptions").stdout
