"""The events example: three dependents that cannot use the agent each re-render their own
configuration file when a token rotates, through signed webhook deliveries, untouched."""

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import awsraw
from conftest import ACCESS_KEY_ID, BATON, SECRET_ACCESS_KEY

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "events" / "render_on_rotation.py"


def test_dependents_rerender_their_config_on_every_rotation(server, sm, unique_name, tmp_path):
    sm.create_secret(Name=unique_name, SecretString="token-0")
    awsraw.call(server, "baton.PutRotationPolicy", {"SecretId": unique_name, "PropagationDelaySeconds": 1,
                                                    "RetireGraceSeconds": 0})
    env = dict(os.environ, BATON_ENDPOINT=server.endpoint, AWS_ACCESS_KEY_ID=ACCESS_KEY_ID,
               AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY, AWS_REGION="us-east-1")
    procs, outputs = [], []
    try:
        for i in range(3):
            template, output, key = tmp_path / f"t{i}", tmp_path / f"app{i}.conf", tmp_path / f"key{i}"
            template.write_text(f"[service {i}]\napi_token = ${{SECRET}}\n")
            key.write_text("not yet")
            proc = subprocess.Popen([sys.executable, str(EXAMPLE), "--secret", unique_name, "--template",
                                     str(template), "--output", str(output), "--signing-secret-file", str(key),
                                     "--baton", str(BATON)], env=env, stdout=subprocess.PIPE, text=True)
            procs.append(proc)
            port = int(proc.stdout.readline())
            status, sub = awsraw.call(server, "baton.CreateSubscription", {
                "Url": f"http://127.0.0.1:{port}/", "SecretNamePrefix": unique_name,
                "EventNames": ["RotationSucceeded", "PutSecretValue"]})
            assert status == 200, sub
            key.write_text(sub["SigningSecret"])
            outputs.append(output)
        assert all("api_token = token-0" in o.read_text() for o in outputs)
        lam = f"arn:aws:lambda:us-east-1:{server.account_id}:function:baton-random"
        for n in range(2):
            sm.rotate_secret(SecretId=unique_name, **({"RotationLambdaARN": lam} if n == 0 else {}))
            deadline = time.time() + 30
            while awsraw.call(server, "baton.DescribeRotation", {"SecretId": unique_name})[1]["Status"] != "Succeeded":
                assert time.time() < deadline
                time.sleep(0.1)
            current = sm.get_secret_value(SecretId=unique_name)["SecretString"]
            deadline = time.time() + 20
            while not all(f"api_token = {current}\n" in o.read_text() for o in outputs):
                assert time.time() < deadline, [o.read_text() for o in outputs]
                time.sleep(0.1)
        assert all(stat.S_IMODE(o.stat().st_mode) == 0o600 for o in outputs)
    finally:
        for p in procs:
            p.kill()
            p.wait()
