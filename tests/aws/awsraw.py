"""A small SigV4 signer of our own for raw requests, so tests can send exactly the malformed,
expired or tampered requests that SDKs refuse to build. A correctly signed request from it is
accepted by the server (see test_auth), which shows the signer itself is right."""

import datetime
import hashlib
import hmac
import json
import urllib.error
import urllib.request


def _hmac(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sign(method, host, body, headers, access_key, secret_key, region, service, when):
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    headers = {k.lower(): v for k, v in headers.items()}
    headers["host"] = host
    headers["x-amz-date"] = amz_date
    signed = sorted(headers)
    canonical_headers = "".join(f"{h}:{' '.join(str(headers[h]).split())}\n" for h in signed)
    canonical = "\n".join([
        method, "/", "", canonical_headers, ";".join(signed), hashlib.sha256(body).hexdigest(),
    ])
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(("AWS4" + secret_key).encode(), date)
    key = _hmac(_hmac(_hmac(key, region), service), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
    return headers


def call(server, target, payload=None, *, body=None, access_key=None, secret_key=None,
         region="us-east-1", service="secretsmanager", when=None, headers=None, tamper=None):
    """Sends a request and returns (status, parsed JSON body)."""
    from conftest import ACCESS_KEY_ID, SECRET_ACCESS_KEY

    if body is None:
        body = json.dumps(payload if payload is not None else {}).encode()
    base = {"content-type": "application/x-amz-json-1.1"}
    if target is not None:
        base["x-amz-target"] = target
    base.update(headers or {})
    signed = sign("POST", f"127.0.0.1:{server.port}", body, base,
                  access_key or ACCESS_KEY_ID, secret_key or SECRET_ACCESS_KEY, region, service,
                  when or datetime.datetime.now(datetime.timezone.utc))
    if tamper:
        body = tamper(signed, body)
    request = urllib.request.Request(f"{server.endpoint}/", data=body, method="POST",
                                     headers={k: v for k, v in signed.items() if k != "host"})
    from conftest import remember_sensitive

    if payload is not None:
        remember_sensitive(payload)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            parsed = json.loads(response.read() or b"{}")
            remember_sensitive(parsed)
            return response.status, parsed
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, {"raw": raw.decode(errors="replace")}


def error_of(body):
    return body.get("__type"), body.get("Message", body.get("message"))


def rotation(server, secret_id):
    """The secret's rotation, as baton.DescribeRotation answers."""
    status, body = call(server, "baton.DescribeRotation", {"SecretId": secret_id})
    assert status == 200, body
    return body


def wait_rotation(server, secret_id, until, timeout=60):
    """Polls the rotation until `until(rotation)` holds, and returns that rotation."""
    import time

    deadline = time.time() + timeout
    while not until(r := rotation(server, secret_id)):
        assert time.time() < deadline, r
        time.sleep(0.1)
    return r
