#!/usr/bin/env python3
"""A dependent that cannot run Baton's agent, kept up to date by events: it receives Baton's
signed webhook deliveries, and when its secret changes (RotationSucceeded, PutSecretValue,
UpdateSecretVersionStage) it reads the new value with the baton CLI and re-renders its
configuration file atomically. Many such dependents update themselves on every rotation
without anyone touching them.

  render_on_rotation.py --secret NAME --template FILE --output FILE --signing-secret-file FILE [--port N]

The template holds ${SECRET}; the output file is written with mode 0600 by atomic rename. The
baton CLI finds the server and credentials in its usual environment (BATON_ENDPOINT or
AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY). The port is printed on start.
"""

import argparse
import hashlib
import hmac
import json
import os
import subprocess
import tempfile
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

CHANGES = {"RotationSucceeded", "PutSecretValue", "UpdateSecretVersionStage", "UpdateSecretVersionStages"}
TOLERANCE_SECONDS = 300


def verified(secret, headers, body):
    timestamp = headers.get("Baton-Timestamp", "0")
    expected = "v1=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(timestamp)) <= TOLERANCE_SECONDS
    return fresh and any(hmac.compare_digest(expected, v.strip())
                         for v in headers.get("Baton-Signature", "").split(","))


def render(args):
    value = subprocess.run([args.baton, "secret", "get", args.secret], check=True,
                           capture_output=True, text=True).stdout.rstrip("\n")
    with open(args.template) as f:
        text = f.read().replace("${SECRET}", value)
    directory = os.path.dirname(os.path.abspath(args.output))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".render-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, args.output)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--secret", required=True)
    parser.add_argument("--template", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--signing-secret-file", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--baton", default="baton")
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with open(args.signing_secret_file, "rb") as f:
                secret = f.read().strip()
            if not verified(secret, self.headers, body):
                self.send_response(401)
                self.end_headers()
                return
            event = json.loads(body)
            if event["detail"]["eventName"] in CHANGES and event["detail"]["baton"]["secretName"] == args.secret:
                try:
                    render(args)
                except subprocess.CalledProcessError:
                    self.send_response(503)  # Baton retries the delivery
                    self.end_headers()
                    return
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", args.port), Handler)
    render(args)  # the file exists before anyone is told the port
    print(server.server_port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
