"""`baton serve` itself: first start, configuration, TLS, metrics, shutdown, limits, and what
it leaves on disk and in its logs. Each test runs its own server on the embedded store."""

import json
import os
import re
import socket
import stat
import subprocess
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import BATON


def test_first_start_creates_private_files_and_prints_the_admin_key_once(fresh):
    srv = fresh(extra_env={"BATON_BOOTSTRAP_ACCESS_KEY_ID": "", "BATON_BOOTSTRAP_SECRET_ACCESS_KEY": ""})
    env = srv.env()
    del env["BATON_BOOTSTRAP_ACCESS_KEY_ID"], env["BATON_BOOTSTRAP_SECRET_ACCESS_KEY"]
    srv.env = lambda: env
    srv.start()
    first = srv.read_log()
    key_id = re.search(r"AWS_ACCESS_KEY_ID=(\S+)", first).group(1)
    secret = re.search(r"AWS_SECRET_ACCESS_KEY=(\S+)", first).group(1)
    for name in ("root.key", "credentials", "baton.db"):
        mode = stat.S_IMODE(os.stat(srv.data_dir / name).st_mode)
        assert mode == 0o600, f"{name} has mode {oct(mode)}"
    assert stat.S_IMODE(os.stat(srv.data_dir).st_mode) == 0o700
    assert secret in (srv.data_dir / "credentials").read_text()
    client = srv.client(access_key=key_id, secret_key=secret)
    client.create_secret(Name="after-restart", SecretString="persisted")
    srv.stop()
    srv.start()
    assert srv.read_log().count(secret) == 1, "the key is printed on first start only"
    assert client.get_secret_value(SecretId="after-restart")["SecretString"] == "persisted"


def test_unknown_config_file_keys_stop_the_server_with_their_name(fresh, tmp_path):
    config = tmp_path / "baton.toml"
    config.write_text('listen = "127.0.0.1:1"\nlisten_prot = 9\n')
    out = subprocess.run([str(BATON), "serve", "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "listen_prot" in out.stderr and str(config) in out.stderr


def test_config_file_values_apply_and_flags_override_them(fresh, tmp_path):
    srv = fresh()
    config = tmp_path / "baton.toml"
    config.write_text(f'regions = ["ap-south-1"]\nlisten = "127.0.0.1:1"\naccount_id = "111122223333"\n')
    srv.extra_args = ["--config", str(config)]
    srv.regions = "ap-south-1"
    srv.start()
    arn = srv.client(region="ap-south-1").create_secret(Name="cfg", SecretString="x")["ARN"]
    # --account-id on the command line overrides the file's account_id.
    assert arn.startswith(f"arn:aws:secretsmanager:ap-south-1:{srv.account_id}:secret:cfg-")


def test_a_bad_cache_size_stops_the_server_with_the_reason(fresh):
    for size, reason in [("128MB", '"MB"'), ("lots", "unknown unit \"lots\""), ("GiB", "expected a number"), ("4096", "at least 1MiB")]:
        out = subprocess.run([str(BATON), "serve", "--cache-size", size], capture_output=True, text=True, timeout=30)
        assert out.returncode == 1, out
        assert reason in out.stderr and "cache_size" in out.stderr, out.stderr


def test_a_cache_smaller_than_the_secrets_evicts_and_reads_stay_exact(fresh):
    # 60 secrets of 40 KB each (2.4 MB sealed) through a 1 MiB cache: reads evict, and every
    # read, before and after a write, returns the stored value.
    srv = fresh(extra_args=["--cache-size", "1MiB"]).start()
    sm = srv.client()
    values = {f"evict/{i}": f"{i:03d}" + "v" * 40_000 for i in range(60)}
    for name, value in values.items():
        sm.create_secret(Name=name, SecretString=value)
    for _ in range(2):
        for name, value in values.items():
            assert sm.get_secret_value(SecretId=name)["SecretString"] == value
    for name in list(values)[::7]:
        values[name] = "changed-" + values[name][:10]
        sm.put_secret_value(SecretId=name, SecretString=values[name])
        assert sm.get_secret_value(SecretId=name)["SecretString"] == values[name]
    for name, value in values.items():
        assert sm.get_secret_value(SecretId=name)["SecretString"] == value


def test_sigterm_shuts_down_gracefully(fresh):
    srv = fresh().start()
    srv.client().list_secrets()
    started = time.time()
    srv.process.terminate()
    assert srv.process.wait(timeout=15) == 0
    assert time.time() - started < 10
    assert "shutting down" in srv.read_log()


def test_tls_is_served_when_a_certificate_is_given(fresh, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    srv = fresh(extra_args=["--tls-cert", str(cert), "--tls-key", str(key)], extra_env={"CA_FILE": str(cert)})
    srv.scheme = "https"
    srv.start()
    client = srv.client(verify=str(cert))
    client.create_secret(Name="over-tls", SecretString="x")
    assert client.get_secret_value(SecretId="over-tls")["SecretString"] == "x"
    with pytest.raises(Exception):
        urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/health", timeout=2)


def test_metrics_count_requests_by_operation_and_outcome(fresh):
    srv = fresh().start()
    client = srv.client()
    client.create_secret(Name="m", SecretString="x")
    client.get_secret_value(SecretId="m")
    with pytest.raises(ClientError):
        client.get_secret_value(SecretId="missing")
    text = srv.metrics()
    assert re.search(r'baton_requests_total\{operation="secretsmanager.GetSecretValue",outcome="ok"\} 1', text), text
    assert re.search(r'baton_requests_total\{operation="secretsmanager.GetSecretValue",outcome="ResourceNotFoundException"\} 1', text)
    assert 'baton_request_duration_seconds_bucket{operation="secretsmanager.CreateSecret",le="0.005"}' in text
    health = urllib.request.urlopen(f"{srv.endpoint}/health").read()
    assert health == b'{"status":"ok"}'


def test_values_never_reach_the_database_file_or_logs_in_plaintext(fresh):
    # Every log line on: trace level and the access log.
    srv = fresh(extra_env={"RUST_LOG": "trace"}, extra_args=["--access-log"]).start()
    client = srv.client()
    marker = "PLAINTEXT-MARKER-7f3a9c1e-never-on-disk"
    client.create_secret(Name="radioactive", SecretString=marker)
    client.put_secret_value(SecretId="radioactive", SecretString=marker + "-v2")
    client.put_secret_value(SecretId="radioactive", SecretBinary=marker.encode() + b"-bin")
    client.get_secret_value(SecretId="radioactive")
    client.list_secrets()
    files = [srv.data_dir / n for n in ("baton.db", "baton.db-wal", "baton.db-shm") if (srv.data_dir / n).exists()]
    assert srv.data_dir / "baton.db-wal" in files, "the WAL is scanned while the server still runs"
    import base64
    needles = [marker.encode(), base64.b64encode(marker.encode()), srv.env()["BATON_BOOTSTRAP_SECRET_ACCESS_KEY"].encode()]
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"{needle!r} found in {path.name}"
    log = srv.read_log()
    assert "radioactive" in log or "GetSecretValue" in log, "the log is being written"
    assert marker not in log
    srv.stop()
    for path in [srv.data_dir / "baton.db"]:
        assert marker.encode() not in path.read_bytes()


def test_the_access_log_is_off_unless_asked_for(fresh):
    """The audit log records every request; the per-request log line is opt-in, even at
    RUST_LOG=debug, and once on it names the request without its values."""
    quiet = fresh(extra_env={"RUST_LOG": "debug"}).start()
    quiet.client().create_secret(Name="quiet", SecretString="quiet-value-123456")
    quiet.client().get_secret_value(SecretId="quiet")
    quiet_log = quiet.read_log()
    assert "baton::access" not in quiet_log and "latency_us" not in quiet_log, quiet_log[-2000:]
    loud = fresh(extra_args=["--access-log", "--log-format", "json"]).start()
    loud.client().create_secret(Name="loud", SecretString="loud-value-123456")
    got = loud.client().get_secret_value(SecretId="loud")
    lines = [json.loads(line) for line in loud.read_log().splitlines() if '"baton::access"' in line]
    reads = [l for l in lines if l["fields"].get("operation") == "secretsmanager.GetSecretValue"]
    assert len(reads) == 1, lines
    assert reads[0]["fields"]["request_id"] == got["ResponseMetadata"]["RequestId"]
    assert reads[0]["fields"]["status"] == 200 and reads[0]["fields"]["latency_us"] > 0
    assert "loud-value-123456" not in loud.read_log()


def test_connections_beyond_the_limit_are_refused_and_service_continues(fresh):
    srv = fresh(extra_args=["--connections-max", "2"]).start()

    def hold():
        """A connection the server accepted and keeps: a served keep-alive request proves it.
        The readiness probe's own connections may still be counted for a moment after they
        close (the server notices the close asynchronously, later under load), so a refusal
        is retried for a bounded time."""
        deadline = time.time() + 10
        while True:
            s = socket.create_connection(("127.0.0.1", srv.port))
            try:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = s.recv(4096)
            except ConnectionError:
                answer = b""
            if answer.startswith(b"HTTP/1.1 200"):
                return s
            s.close()
            assert time.time() < deadline, f"the server never accepted a held connection: {answer!r}"
            time.sleep(0.1)

    held = [hold(), hold()]
    with pytest.raises(Exception):
        urllib.request.urlopen(f"{srv.endpoint}/health", timeout=3).read()
    for s in held:
        s.close()
    deadline = time.time() + 10
    while True:
        try:
            assert urllib.request.urlopen(f"{srv.endpoint}/health", timeout=3).status == 200
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
    metrics = srv.metrics()
    assert re.search(r"baton_connections_refused_total \d+", metrics), metrics


def test_a_root_key_that_does_not_match_the_database_stops_the_server(fresh):
    srv = fresh().start()
    srv.client().create_secret(Name="sealed", SecretString="x")
    srv.stop()
    (srv.data_dir / "root.key").unlink()
    srv.start(wait=False)
    assert srv.process.wait(timeout=20) == 1
    log = srv.read_log()
    assert "the deployment's root key is rk-" in log and "does not hold it" in log, log[-1500:]


def test_a_second_server_on_the_same_data_directory_is_refused(fresh):
    first = fresh().start()
    second = fresh()
    second.data_dir = first.data_dir
    second.start(wait=False)
    assert second.process.wait(timeout=20) == 1
    assert "in use by another Baton process" in second.read_log()
    assert first.client().list_secrets()["SecretList"] == []
