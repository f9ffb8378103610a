"""A webhook rotator for the tests: it verifies Baton's signature, then runs the AWS-template
rotation function (rotation_function.py) with the temporary credentials the request carries.

Usage: webhook_receiver.py SIGNING_SECRET_FILE LOG_FILE. It prints its port on the first line.
Each request appends one JSON line to LOG_FILE: the step and "ok", "bad-signature" or "failed".
The signing secret is read at each request, so the test can write it after registering the URL.
"""

import hmac
import json
import os
import sys
import time
from hashlib import sha256
from http.server import BaseHTTPRequestHandler, HTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rotation_function  # noqa: E402

SECRET_FILE, LOG_FILE = sys.argv[1], sys.argv[2]
TOLERANCE_SECONDS = 300


def signature_ok(secret, timestamp, body, header):
    expected = "v1=" + hmac.new(secret, timestamp.encode() + b"." + body, sha256).hexdigest()
    fresh = abs(time.time() - int(timestamp)) <= TOLERANCE_SECONDS
    return fresh and any(hmac.compare_digest(expected, v.strip()) for v in header.split(","))


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open(SECRET_FILE, "rb") as f:
            secret = f.read().strip()
        timestamp = self.headers.get("Baton-Timestamp", "0")
        event = json.loads(body)
        if not signature_ok(secret, timestamp, body, self.headers.get("Baton-Signature", "")):
            self.finish_with(401, event.get("Step"), "bad-signature")
            return
        baton = event.pop("Baton")
        os.environ.update({
            "AWS_ENDPOINT_URL": baton["Endpoint"],
            "AWS_REGION": baton["Region"],
            "AWS_DEFAULT_REGION": baton["Region"],
            "AWS_ACCESS_KEY_ID": baton["Credentials"]["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": baton["Credentials"]["SecretAccessKey"],
            "AWS_SESSION_TOKEN": baton["Credentials"]["SessionToken"],
        })
        try:
            rotation_function.lambda_handler(event, None)
        except Exception as e:  # the rotation function's failure is the step's failure
            self.finish_with(500, event["Step"], "failed: %s" % e)
            return
        self.finish_with(200, event["Step"], "ok")

    def finish_with(self, status, step, outcome):
        with open(LOG_FILE, "a") as f:
            f.write(json.dumps({"step": step, "outcome": outcome}) + "\n")
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_port, flush=True)
server.serve_forever()
