"""The AWS SDK for JavaScript v3 (`@aws-sdk/client-secrets-manager` and `@aws-sdk/client-kms`,
pinned in tests/js/package-lock.json) against a running `baton serve`, on each engine.

The checks themselves are in tests/js/sdk.test.mjs, run with Node's own test runner;
scripts/test installs the packages with `npm ci`."""

import os
import shutil
import subprocess

import pytest

from conftest import ACCESS_KEY_ID, REGION, REPO, SECRET_ACCESS_KEY

JS = REPO / "tests" / "js"


def test_the_javascript_sdk_covers_secrets_rotation_configuration_and_kms(server, unique_name):
    node = shutil.which("node")
    assert node, "node is not installed; .ci/run installs nodejs"
    assert (JS / "node_modules" / "@aws-sdk" / "client-kms").is_dir(), \
        "run `npm ci --prefix tests/js` (scripts/test does)"
    env = {
        "PATH": os.environ["PATH"],
        "BATON_ENDPOINT": server.endpoint,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "BATON_ACCOUNT_ID": server.account_id,
        "BATON_TEST_PREFIX": unique_name,
    }
    run = subprocess.run([node, "--test", "--test-reporter=spec", str(JS / "sdk.test.mjs")],
                         cwd=JS, env=env, capture_output=True, text=True, timeout=120)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    # Node's runner ends with its counts; every test ran and none was skipped.
    assert "ℹ pass 4" in report and "ℹ fail 0" in report and "ℹ skipped 0" in report, report
