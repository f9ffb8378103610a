"""The web console in a real browser: Playwright drives Debian's chromium against a running
`baton serve`. Each test signs in through the form, as a person would, and checks what the
page shows and what the server did (through boto3 and the audit log).

Screenshots of each page go to $CARGO_TARGET_DIR/console-screenshots, the CI artifacts.
"""

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import awsraw
from conftest import ACCESS_KEY_ID, SECRET_ACCESS_KEY, TARGET_DIR, free_port
from test_examples import wait_for_port

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium")
SHOTS = TARGET_DIR / "console-screenshots"
BIN = TARGET_DIR / "debug"
XSS_MARKERS = ("window.__xss",)


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.fail("chromium is not on the PATH: apt-get install chromium (.ci/run does)")
    with playwright_sync.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    p.console_errors = []
    p.on("pageerror", lambda e: p.console_errors.append(str(e)))
    yield p
    context.close()


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(page, server, key_id=ACCESS_KEY_ID, secret=SECRET_ACCESS_KEY):
    page.goto(f"{server.endpoint}/console/")
    page.get_by_label("Access key ID").fill(key_id)
    page.get_by_label("Secret access key").fill(secret)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/overview")


def secret_url(server, name):
    return f"{server.endpoint}/console/secrets/{urllib.parse.quote(name, safe='')}"


def test_sign_in_create_reveal_and_the_audit_entry(server, sm, page, unique_name):
    page.goto(f"{server.endpoint}/console/")
    shot(page, "sign-in")
    sign_in(page, server)
    page.get_by_role("link", name="Secrets").click()
    page.wait_for_url("**/console/secrets")
    page.get_by_text("New secret").click()
    page.get_by_label("Name", exact=True).fill(unique_name)
    page.get_by_label("Description", exact=True).fill("made in the console")
    page.get_by_label("Value", exact=True).fill("console-value-" + unique_name)
    page.get_by_role("button", name="Create secret").click()
    page.wait_for_url(f"**/console/secrets/{urllib.parse.quote(unique_name, safe='')}?done=created")
    assert sm.get_secret_value(SecretId=unique_name)["SecretString"] == "console-value-" + unique_name

    # The list links each name to its page.
    page.goto(f"{server.endpoint}/console/secrets?q={urllib.parse.quote(unique_name)}")
    link = page.get_by_role("link", name=unique_name, exact=True)
    assert link.get_attribute("href") == f"/console/secrets/{urllib.parse.quote(unique_name, safe='')}"
    shot(page, "secrets")
    link.click()

    # No value in the page until Reveal.
    assert "console-value-" not in page.content()
    page.get_by_role("button", name="Reveal").click()
    value = page.get_by_label("The current value")
    assert value.inner_text() == "console-value-" + unique_name
    shot(page, "secret")

    # Reveal was a GetSecretValue, audited with the console as its user agent.
    arn = sm.describe_secret(SecretId=unique_name)["ARN"]
    # The log's last 1,000 entries: the suite's server has written many before this test.
    status, out = awsraw.call(server, "baton.ListAuditEntries",
                              {"Action": "secretsmanager:GetSecretValue", "AfterSeq": -1000, "MaxResults": 1000})
    assert status == 200, out
    mine = [e for e in out["Entries"] if e["Resource"] in (unique_name, arn)
            and e["UserAgent"] == "baton-console"]
    assert mine, [(e["Resource"], e.get("UserAgent")) for e in out["Entries"][-5:]]
    assert mine[-1]["Decision"] == "allow" and mine[-1]["Outcome"] == "ok", out["Entries"][-5:]
    # So is the sign-in.
    status, out = awsraw.call(server, "baton.ListAuditEntries",
                              {"Action": "baton:SignIn", "AfterSeq": -1000, "MaxResults": 1000})
    assert status == 200, out
    assert any(e["Decision"] == "allow" and e["UserAgent"] == "baton-console"
               and e["Principal"].endswith(":root") for e in out["Entries"]), out["Entries"][-3:]
    # The audit page finds it too.
    page.goto(f"{server.endpoint}/console/audit?action=secretsmanager%3AGetSecretValue")
    assert page.locator("table.audit tbody tr", has_text="baton-console").count() >= 1
    page.get_by_role("button", name="Verify the chain").click()
    assert "The chain is intact" in page.get_by_role("status").inner_text()
    shot(page, "audit")
    assert page.console_errors == []


def test_security_headers_and_session_cookie_flags(server, page):
    response = page.goto(f"{server.endpoint}/console/")
    h = response.headers
    assert "script-src 'self'" in h["content-security-policy"]
    assert "unsafe-inline" not in h["content-security-policy"]
    assert "frame-ancestors 'none'" in h["content-security-policy"]
    assert h["x-frame-options"] == "DENY"
    assert h["referrer-policy"] == "no-referrer"
    sign_in(page, server)
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["baton_session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert session["path"] == "/console"
    # Plain HTTP here: Secure would stop the browser sending it. Under TLS it is Secure
    # (the console crate's unit test covers the header).
    assert session["secure"] is False
    # The session cookie is a session cookie: no expiry kept by the browser.
    assert session["expires"] == -1


def test_sign_out_ends_the_session_on_the_server(server, page):
    sign_in(page, server)
    token = {c["name"]: c["value"] for c in page.context.cookies()}["baton_session"]
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/")
    assert page.get_by_role("button", name="Sign in").is_visible()
    # The old token is dead on the server, not just forgotten by the browser.
    replay = page.context.request.get(f"{server.endpoint}/console/secrets",
                                      headers={"cookie": f"baton_session={token}"}, max_redirects=0)
    assert replay.status == 303 and replay.headers["location"] == "/console/"


def test_a_wrong_secret_is_refused_and_failed_sign_ins_are_rate_limited(browser):
    # A server of its own, so the limit does not lock the other tests out.
    from conftest import BatonServer

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        srv = BatonServer(data_dir=Path(d) / "data", engine="sqlite")
        srv.start()
        try:
            context = browser.new_context()
            page = context.new_page()
            statuses = []
            for _ in range(6):
                page.goto(f"{srv.endpoint}/console/")
                page.get_by_label("Access key ID").fill(ACCESS_KEY_ID)
                page.get_by_label("Secret access key").fill("not-the-secret")
                with page.expect_response(lambda r: r.url.endswith("/console/sign-in")) as answer:
                    page.get_by_role("button", name="Sign in").click()
                statuses.append(answer.value.status)
            assert statuses == [401] * 5 + [429], statuses
            assert "Too many failed sign-ins" in page.get_by_role("alert").inner_text()
            # Even the right secret waits out the window.
            page.get_by_label("Access key ID").fill(ACCESS_KEY_ID)
            page.get_by_label("Secret access key").fill(SECRET_ACCESS_KEY)
            with page.expect_response(lambda r: r.url.endswith("/console/sign-in")) as answer:
                page.get_by_role("button", name="Sign in").click()
            assert answer.value.status == 429
            context.close()
            # Each refused secret is in the audit log; the attempts the limit stopped never
            # reached the check.
            status, out = awsraw.call(srv, "baton.ListAuditEntries", {"Action": "baton:SignIn"})
            assert status == 200, out
            seen = [(e["Decision"], e["Outcome"], e["AccessKeyId"], e["UserAgent"]) for e in out["Entries"]]
            assert seen == [("deny", "UnrecognizedClientException", ACCESS_KEY_ID, "baton-console")] * 5, seen
        finally:
            srv.stop()


def test_user_supplied_html_is_shown_inert(server, sm, page, unique_name):
    script = "<script>window.__xss = 1</script>"
    img = "<img src=x onerror=\"window.__xss = 2\">"
    out = sm.create_secret(Name=unique_name, SecretString="v", Description=script + " described",
                           Tags=[{"Key": "owner", "Value": "x"}])
    # Tag values allow no angle brackets in AWS's character set; the description and the
    # consumer name carry the markup instead, and a tag shows the characters it may hold.
    version = out["VersionId"]
    status, body = awsraw.call(server, "baton.ReportConsumer", {
        "Application": img, "InstanceId": script, "LeaseSeconds": 60,
        "Holdings": [{"SecretId": unique_name, "CurrentVersionId": version,
                      "AcceptedVersionIds": [version]}]})
    assert status == 200, body
    sign_in(page, server)
    page.goto(secret_url(server, unique_name))
    assert page.get_by_text(script + " described").is_visible()
    page.goto(secret_url(server, unique_name) + "/rotation")
    row = page.locator("table.consumers tbody tr").first
    assert row.locator("td").nth(0).inner_text() == img
    assert row.locator("td").nth(1).inner_text() == script
    time.sleep(0.5)
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator("img").count() == 0
    assert page.console_errors == []


def test_a_cross_site_form_post_is_refused(server, sm, page, unique_name):
    sm.create_secret(Name=unique_name, SecretString="before")
    sign_in(page, server)
    target = secret_url(server, unique_name) + "/value"

    # The same browser, signed in, posts without the token: refused.
    answer = page.context.request.post(target, form={"value": "no-token"}, max_redirects=0)
    assert answer.status == 403
    assert "CSRF token" in answer.text()

    # Another site's page submits a form to the console: refused (SameSite=Strict keeps the
    # cookie home, and the form has no token either).
    class Attacker(BaseHTTPRequestHandler):
        def do_GET(self):
            html = (f'<form id=f method=post action="{target}">'
                    '<input name=value value=pwned></form>'
                    '<script>document.getElementById("f").submit()</script>').encode()
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, *args):
            pass

    port = free_port()
    attacker = ThreadingHTTPServer(("127.0.0.1", port), Attacker)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        with page.expect_response(lambda r: r.url == target) as answer:
            page.goto(f"http://localhost:{port}/")
        assert answer.value.status == 403
    finally:
        attacker.shutdown()
    assert sm.get_secret_value(SecretId=unique_name)["SecretString"] == "before"


def test_a_read_only_principal_sees_no_write_actions_and_is_denied_if_it_posts(server, sm, page,
                                                                               unique_name):
    sm.create_secret(Name=unique_name, SecretString="read-only-view")
    name = unique_name.replace("/", "-")[:50] + "-ro"
    for target, body in [
        ("baton.CreatePrincipal", {"Name": name, "Kind": "user"}),
        ("baton.PutPrincipalPolicy", {"PrincipalName": name, "PolicyName": "read", "PolicyDocument": json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Resource": "*", "Action": [
                "secretsmanager:ListSecrets", "secretsmanager:DescribeSecret",
                "secretsmanager:ListSecretVersionIds", "secretsmanager:GetSecretValue"]}]})}),
    ]:
        status, out = awsraw.call(server, target, body)
        assert status == 200, out
    status, out = awsraw.call(server, "baton.CreateAccessKey", {"PrincipalName": name})
    assert status == 200, out
    key = out["AccessKey"]
    sign_in(page, server, key["AccessKeyId"], key["SecretAccessKey"])
    # The overview's operations are not in its policy: a note where each would be.
    assert page.locator(".denied").count() == 3
    assert page.locator(".denied").first.inner_text().startswith("Access denied.")
    page.goto(f"{server.endpoint}/console/secrets")
    assert page.get_by_role("link", name=unique_name).is_visible()
    assert page.get_by_text("New secret").count() == 0
    page.goto(secret_url(server, unique_name))
    assert page.get_by_role("button", name="Reveal").is_visible()
    assert page.get_by_text("Put a new value").count() == 0
    assert page.get_by_role("button", name="Rotate now").count() == 0
    # Rotation needs DescribeRotation, which it lacks: a note where the data would be.
    page.goto(secret_url(server, unique_name) + "/rotation")
    assert page.locator(".denied").first.inner_text().startswith("Access denied.")
    # Posting the write anyway, with a valid CSRF token, is denied by authorization.
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    answer = page.context.request.post(secret_url(server, unique_name) + "/value",
                                       form={"csrf": csrf, "value": "written"}, max_redirects=0)
    assert answer.status == 400 or answer.status == 403
    assert "Access denied" in answer.text()
    assert sm.get_secret_value(SecretId=unique_name)["SecretString"] == "read-only-view"


def test_the_rotation_page_shows_the_held_gate_and_its_passing_live(server, sm, page, unique_name,
                                                                      tmp_path):
    """Three reporting consumers (baton-client's KeyringCache in the example verifier) hold
    a secret; one is stopped on purpose, so the propagation gate waits for it. The page shows
    the gate held by that instance, then passing when it catches up, without a reload."""
    sm.create_secret(Name=unique_name, SecretString="initial-hmac-key-" + unique_name)
    status, body = awsraw.call(server, "baton.PutRotationPolicy", {
        "SecretId": unique_name, "PropagationDelaySeconds": 300, "MaxGateWaitSeconds": 300,
        "RetireGraceSeconds": 1})
    assert status == 200, body
    env = dict(os.environ, AWS_ENDPOINT_URL=server.endpoint, AWS_REGION="us-east-1",
               AWS_ACCESS_KEY_ID=ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY)
    processes = []
    try:
        ports = [free_port() for _ in range(3)]
        for i, port in enumerate(ports):
            processes.append(subprocess.Popen(
                [str(BIN / "hmac-verifier"), "--secret", unique_name, "--port", str(port),
                 "--stats", str(tmp_path / f"v{i}.json")],
                env=dict(env, INSTANCE_ID=f"verifier-{i}"),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in ports:
            wait_for_port(port)
        deadline = time.time() + 20
        while True:
            status, out = awsraw.call(server, "baton.ListConsumers", {"SecretId": unique_name})
            if sum(1 for c in out.get("Consumers", []) if c.get("Live")) == 3:
                break
            assert time.time() < deadline, out
            time.sleep(0.1)

        lagging = processes[2]
        lagging.send_signal(signal.SIGSTOP)
        sign_in(page, server)
        page.goto(secret_url(server, unique_name) + "/rotation")
        header = page.locator("table.consumers thead tr")
        for column in ("Application", "Instance", "Uses"):
            assert column in header.inner_text()
        page.evaluate("window.__notReloaded = true")

        lam = f"arn:aws:lambda:us-east-1:{server.account_id}:function:baton-random"
        new = sm.rotate_secret(SecretId=unique_name, RotationLambdaARN=lam)["VersionId"]
        gate = page.locator(".gate")
        gate.wait_for(timeout=15000)
        page.wait_for_function(
            "() => document.querySelector('.gate') && "
            "document.querySelector('.gate').innerText.includes('verifier-2')", timeout=15000)
        assert "propagation" in gate.inner_text()
        held_row = page.locator("table.consumers tbody tr", has_text="verifier-2")
        assert held_row.get_attribute("class") == "lagging"
        for other in ("verifier-0", "verifier-1"):
            row = page.locator("table.consumers tbody tr", has_text=other)
            page.wait_for_function(
                f"() => [...document.querySelectorAll('table.consumers tbody tr')]"
                f".some(r => r.innerText.includes('{other}') && r.className === 'caught-up')",
                timeout=15000)
            assert new in row.inner_text()
        # The propagation plot: the propagation gate's series, its share as text.
        page.wait_for_function(
            "() => document.querySelector('#live figure.plot polyline.series') !== null",
            timeout=15000)
        assert "accept the new version (propagation gate)" in \
            page.locator("#live figure.plot figcaption").inner_text()
        shot(page, "rotation-gate-held")

        lagging.send_signal(signal.SIGCONT)
        page.wait_for_function(
            "() => !document.body.innerText.includes('Held by: ') || "
            "!document.querySelector('.gate') || "
            "!document.querySelector('.gate').innerText.includes('verifier-2')", timeout=20000)
        page.wait_for_function(
            "() => [...document.querySelectorAll('table.consumers tbody tr')]"
            ".every(r => r.className === 'caught-up')", timeout=20000)
        assert page.evaluate("window.__notReloaded") is True
        status, r = awsraw.call(server, "baton.DescribeRotation", {"SecretId": unique_name})
        assert "propagation gate passed" in [e["Event"] for e in r["Timeline"]], r
        shot(page, "rotation-gate-passed")
        # The history, on a fresh load: this rotation, with its duration.
        page.reload()
        bars = page.locator("svg[aria-labelledby=history-title] rect")
        assert bars.count() == 1
        assert "InProgress" in page.locator("svg[aria-labelledby=history-title]").text_content() \
            or "Succeeded" in page.locator("svg[aria-labelledby=history-title]").text_content()
        assert page.console_errors == []
    finally:
        for p in processes:
            p.send_signal(signal.SIGCONT)
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def test_console_off_serves_no_console(tmp_path):
    from conftest import BatonServer

    srv = BatonServer(data_dir=tmp_path / "data", engine="sqlite", extra_args=["--console", "off"])
    srv.start()
    try:
        import urllib.error
        import urllib.request

        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{srv.endpoint}/console/", timeout=5)
        assert refused.value.code == 404
        # The API is unaffected.
        status, out = awsraw.call(srv, "secretsmanager.ListSecrets", {})
        assert status == 200, out
    finally:
        srv.stop()


def test_forcing_a_held_gate_needs_the_name_typed_to_confirm(server, sm, page, unique_name):
    created = sm.create_secret(Name=unique_name, SecretString="force-me")
    status, body = awsraw.call(server, "baton.PutRotationPolicy", {
        "SecretId": unique_name, "PropagationDelaySeconds": 300, "MaxGateWaitSeconds": 300})
    assert status == 200, body
    # A reporting consumer that never takes the new version holds the propagation gate.
    status, body = awsraw.call(server, "baton.ReportConsumer", {
        "Application": "stuck", "InstanceId": "i-1", "LeaseSeconds": 120,
        "Holdings": [{"SecretId": unique_name, "CurrentVersionId": created["VersionId"],
                      "AcceptedVersionIds": [created["VersionId"]]}]})
    assert status == 200, body
    lam = f"arn:aws:lambda:us-east-1:{server.account_id}:function:baton-random"
    sm.rotate_secret(SecretId=unique_name, RotationLambdaARN=lam)
    sign_in(page, server)
    page.goto(secret_url(server, unique_name) + "/rotation")
    page.locator(".gate").wait_for(timeout=15000)
    button = page.get_by_role("button", name="Force the gate open")
    assert button.is_disabled()
    page.get_by_label("Type the secret's name").fill(unique_name + "x")
    assert button.is_disabled()

    # Posted anyway without the name: refused, and nothing moves.
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    answer = page.context.request.post(secret_url(server, unique_name) + "/rotation/force",
                                       form={"csrf": csrf, "confirm": "wrong"}, max_redirects=0)
    assert answer.status == 400 and "typed to confirm" in answer.text()
    status, r = awsraw.call(server, "baton.DescribeRotation", {"SecretId": unique_name})
    assert r["WaitingGate"] == "propagation", r

    page.get_by_label("Type the secret's name").fill(unique_name)
    assert button.is_enabled()
    shot(page, "rotation-force")
    button.click()
    page.wait_for_url("**/rotation")
    deadline = time.time() + 15
    while True:
        status, r = awsraw.call(server, "baton.DescribeRotation", {"SecretId": unique_name})
        if "propagation gate passed (forced)" in [e["Event"] for e in r["Timeline"]]:
            break
        assert time.time() < deadline, r
        time.sleep(0.1)


def test_the_overview_shows_each_held_gate_and_the_consumer_holding_it(server, sm, page,
                                                                        unique_name):
    created = sm.create_secret(Name=unique_name, SecretString="overview-me")
    status, body = awsraw.call(server, "baton.PutRotationPolicy", {
        "SecretId": unique_name, "PropagationDelaySeconds": 300, "MaxGateWaitSeconds": 300})
    assert status == 200, body
    status, body = awsraw.call(server, "baton.ReportConsumer", {
        "Application": "<b>stuck</b>", "InstanceId": "i-1", "LeaseSeconds": 120,
        "Holdings": [{"SecretId": unique_name, "CurrentVersionId": created["VersionId"],
                      "AcceptedVersionIds": [created["VersionId"]]}]})
    assert status == 200, body
    lam = f"arn:aws:lambda:us-east-1:{server.account_id}:function:baton-random"
    sm.rotate_secret(SecretId=unique_name, RotationLambdaARN=lam)
    deadline = time.time() + 15
    while True:
        status, r = awsraw.call(server, "baton.DescribeRotation", {"SecretId": unique_name})
        if r.get("WaitingGate") == "propagation":
            break
        assert time.time() < deadline, r
        time.sleep(0.05)
    try:
        sign_in(page, server)
        assert page.url.endswith("/console/overview")
        row = page.locator("table.gates tbody tr", has_text=unique_name)
        assert "propagation" in row.inner_text()
        # The consumer's name is shown as text, not markup.
        assert row.locator(".holder").inner_text() == "<b>stuck</b> / i-1"
        assert row.locator("b").count() == 0
        running = page.locator("#in-flight ~ table tbody tr", has_text=unique_name)
        assert "tested" in running.inner_text()
        assert page.locator("#audit-status ~ dl").inner_text().count("required") == 1
        shot(page, "overview")
        # The secrets list shows the same rotation and its lagging consumer in the row.
        page.goto(f"{server.endpoint}/console/secrets?q={urllib.parse.quote(unique_name)}")
        listed = page.locator("table.list tbody tr", has_text=unique_name)
        assert "tested, propagation gate waiting" in listed.inner_text()
        assert "1 live, 1 lagging" in listed.inner_text()
        page.goto(f"{server.endpoint}/console/overview")
        row = page.locator("table.gates tbody tr", has_text=unique_name)
        row.get_by_role("link", name=unique_name).click()
        page.wait_for_url("**/rotation")
        page.locator(".gate").wait_for(timeout=15000)
        assert page.console_errors == []
    finally:
        sm.cancel_rotate_secret(SecretId=unique_name)


def test_a_secret_page_moves_a_label_and_deletes_and_restores(server, sm, page, unique_name):
    v1 = sm.create_secret(Name=unique_name, SecretString="first")["VersionId"]
    v2 = sm.put_secret_value(SecretId=unique_name, SecretString="second")["VersionId"]
    sm.put_resource_policy(SecretId=unique_name, ResourcePolicy=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*",
            "Principal": {"AWS": f"arn:aws:iam::{server.account_id}:user/<i>reader</i>"}}]}))
    sign_in(page, server)
    page.goto(secret_url(server, unique_name))
    # The versions' timeline: one mark per version, the current one large, labels as text.
    svg = page.locator("figure.plot svg")
    assert svg.locator("circle").count() == 2
    assert svg.locator("circle.current").count() == 1
    assert "AWSCURRENT" in svg.text_content() and "AWSPREVIOUS" in svg.text_content()
    # The resource policy, shown as text.
    assert "user/<i>reader</i>" in page.locator("pre.policy").inner_text()
    assert page.locator("pre.policy i").count() == 0
    assert "Propagation delay T" in page.locator("dl.facts").nth(1).inner_text()
    shot(page, "secret-versions")

    # Move AWSCURRENT back to the first version: AWS's semantics, through the API's operation.
    page.get_by_text("Move a label").click()
    page.get_by_label("Label", exact=True).fill("AWSCURRENT")
    page.get_by_label("To version").select_option(v1)
    page.get_by_role("button", name="Move label").click()
    page.wait_for_url("**?done=label")
    assert "The label was moved." in page.locator(".notice").inner_text()
    stages = {v["VersionId"]: v["VersionStages"]
              for v in sm.list_secret_version_ids(SecretId=unique_name)["Versions"]}
    assert stages == {v1: ["AWSCURRENT"], v2: ["AWSPREVIOUS"]}, stages

    # Deleting needs the name typed; the button stays disabled until then, and the server
    # refuses a post without it.
    page.get_by_text("Delete", exact=True).click()
    button = page.get_by_role("button", name="Schedule deletion")
    assert button.is_disabled()
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    refused = page.context.request.post(secret_url(server, unique_name) + "/delete",
                                        form={"csrf": csrf, "window": "7", "confirm": "nope"},
                                        max_redirects=0)
    assert refused.status == 400 and "typed to confirm" in refused.text()
    assert "DeletedDate" not in sm.describe_secret(SecretId=unique_name)
    page.get_by_label("Recovery window (days, 7 to 30)").fill("7")
    page.get_by_label("Type the secret's name to confirm").fill(unique_name)
    button.click()
    page.wait_for_url("**?done=deleted")
    described = sm.describe_secret(SecretId=unique_name)
    assert "DeletedDate" in described
    assert page.get_by_role("button", name="Put value").count() == 0
    page.get_by_role("button", name="Restore").click()
    page.wait_for_url("**?done=restored")
    assert "DeletedDate" not in sm.describe_secret(SecretId=unique_name)
    assert page.console_errors == []


def test_keys_are_listed_with_aliases_and_can_be_disabled_enabled_and_rotated(server, page,
                                                                             unique_name):
    kms = server.client("kms")
    key = kms.create_key(Description="console <b>key</b>", KeySpec="ECC_NIST_P256",
                         KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    alias = "alias/" + unique_name.replace("/", "-")[:200]
    kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
    sign_in(page, server)
    page.get_by_role("link", name="Keys").click()
    page.wait_for_url("**/console/keys")
    row = page.locator("table.list tbody tr", has_text=key["KeyId"])
    # The list shows 50 keys a page; keys that other tests on this server made may come first.
    while row.count() == 0:
        next_page = page.locator("a[rel=next]")
        assert next_page.count() == 1, f"key {key['KeyId']} is on no page of the list"
        with page.expect_navigation():
            next_page.click()
    assert alias in row.inner_text() and "console <b>key</b>" in row.inner_text()
    assert row.locator("b").count() == 0
    row.get_by_role("link", name=key["KeyId"]).click()
    page.wait_for_url(f"**/console/keys/{key['KeyId']}")
    facts = page.locator("dl.facts").first.inner_text()
    assert "ECC_NIST_P256, SIGN_VERIFY" in facts and alias in facts
    assert page.get_by_role("link", name=f"/jwks/{key['KeyId']}").is_visible()
    shot(page, "key")
    page.get_by_role("button", name="Disable").click()
    page.wait_for_url("**?done=disabled")
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Disabled"
    assert page.get_by_role("button", name="Rotate now").count() == 0
    page.get_by_role("button", name="Enable").click()
    page.wait_for_url("**?done=enabled")
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"
    page.get_by_role("button", name="Rotate now").click()
    page.wait_for_url("**?done=rotated")
    assert "The key was rotated" in page.locator(".notice").inner_text()
    assert kms.get_key_rotation_status(KeyId=key["KeyId"]).get("OnDemandRotationStartDate") \
        or kms.list_key_rotations(KeyId=key["KeyId"])["Rotations"], "a rotation started"
    assert page.console_errors == []


def test_the_events_page_shows_dead_letters_and_redelivers_them(server, sm, page, unique_name):
    from test_delivery import Receiver

    receiver = Receiver("fail")
    try:
        status, sub = awsraw.call(server, "baton.CreateSubscription", {
            "Url": receiver.url, "SecretNamePrefix": unique_name, "MaxAttempts": 1})
        assert status == 200, sub
        sm.create_secret(Name=unique_name, SecretString="v0")
        deadline = time.time() + 20
        while not awsraw.call(server, "baton.ListDeadLetters",
                              {"SubscriptionId": sub["SubscriptionId"]})[1]["DeadLetters"]:
            assert time.time() < deadline, "no dead letter"
            time.sleep(0.05)
        sign_in(page, server)
        page.get_by_role("link", name="Events").click()
        page.wait_for_url("**/console/events")
        assert sub["SubscriptionId"] in page.locator("table.list").first.inner_text()
        letter = page.locator("table.dead-letters tbody tr", has_text=sub["SubscriptionId"])
        assert "CreateSecret" in letter.inner_text() and "delivery failed" in letter.inner_text()
        shot(page, "events")
        receiver.mode = "ok"
        letter.get_by_role("button", name="Redeliver").click()
        assert "Redelivered 1; 0 still failing." in page.locator(".notice").inner_text()
        assert page.locator("table.dead-letters tbody tr",
                            has_text=sub["SubscriptionId"]).count() == 0
        assert [e["detail"]["eventName"] for e in receiver.events()] == ["CreateSecret"]
        assert page.console_errors == []
    finally:
        awsraw.call(server, "baton.DeleteSubscription",
                    {"SubscriptionId": sub["SubscriptionId"]})
        receiver.stop()


def test_a_policy_draft_shows_the_validators_findings_before_it_is_saved(server, page,
                                                                          unique_name):
    name = unique_name.replace("/", "-")[:50] + "-p"
    status, out = awsraw.call(server, "baton.CreatePrincipal", {"Name": name, "Kind": "service"})
    assert status == 200, out
    sign_in(page, server)
    page.get_by_role("link", name="Principals").click()
    page.get_by_role("link", name=name, exact=True).click()
    page.wait_for_url(f"**/console/principals/{name}")
    assert "No policy" in page.locator("main").inner_text()
    page.get_by_label("Policy name").fill("reads")
    page.get_by_label("Policy document (JSON)").fill(json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue"}]}))
    page.get_by_role("button", name="Check").click()
    findings = page.locator("ul.findings")
    assert "SYNTAX_CHECK" in findings.inner_text(), findings.inner_text()
    # Checking saved nothing, and the draft is still in the editor.
    status, out = awsraw.call(server, "baton.ListPrincipals", {})
    assert [pr.get("PolicyNames", []) for pr in out["Principals"] if pr["Name"] == name] == [[]]
    assert "secretsmanager:GetSecretValue" in page.get_by_label("Policy document (JSON)").input_value()
    shot(page, "principal-policy-findings")

    foreign = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
        "Resource": "arn:aws:secretsmanager:us-east-1:111122223333:secret:x"}]}
    page.get_by_label("Policy document (JSON)").fill(json.dumps(foreign))
    page.get_by_role("button", name="Check").click()
    assert "RESOURCE_CHECK" in page.locator("ul.findings").inner_text()
    good = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]}
    page.get_by_label("Policy document (JSON)").fill(json.dumps(good))
    page.get_by_role("button", name="Check").click()
    assert "found nothing" in page.locator("p.findings").inner_text()
    page.get_by_role("button", name="Save policy").click()
    assert "The policy reads was saved." in page.locator(".notice").inner_text()
    status, doc = awsraw.call(server, "baton.GetPrincipalPolicy",
                              {"PrincipalName": name, "PolicyName": "reads"})
    assert status == 200 and json.loads(doc["PolicyDocument"]) == good, doc
    assert page.console_errors == []


def test_pages_fit_a_narrow_screen_and_print_without_controls(server, sm, browser, unique_name):
    sm.create_secret(Name=unique_name, SecretString="narrow", Description="a " * 200)
    context = browser.new_context(viewport={"width": 375, "height": 800})
    page = context.new_page()
    try:
        sign_in(page, server)
        for path in ["/console/overview", "/console/secrets",
                     "/console/secrets/" + urllib.parse.quote(unique_name, safe=""),
                     "/console/secrets/" + urllib.parse.quote(unique_name, safe="") + "/rotation",
                     "/console/keys", "/console/events", "/console/principals", "/console/audit"]:
            page.goto(server.endpoint + path)
            width = page.evaluate("document.documentElement.scrollWidth")
            widest = page.evaluate(
                "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect()"
                ".right > 376).map(e => e.tagName + '.' + e.className).slice(0, 5).join(' ')")
            assert width <= 376, f"{path} is {width} px wide on a 375 px screen: {widest}"
        shot(page, "narrow-audit")
        # Printed, a page keeps its content and drops the bar and the forms.
        page.goto(server.endpoint + "/console/secrets/" + urllib.parse.quote(unique_name, safe=""))
        page.emulate_media(media="print")
        assert page.locator("header.bar").is_hidden()
        assert page.get_by_role("button", name="Reveal").is_hidden()
        assert page.locator("dl.facts").first.is_visible()
    finally:
        context.close()
