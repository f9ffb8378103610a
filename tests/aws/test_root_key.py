"""The root key off the disk: from a command's output, or kept only wrapped by a KMS key that
another Baton serves; and a server process that cannot dump core and keeps its memory in RAM."""

import os
import secrets
import subprocess

from conftest import ACCESS_KEY_ID, SECRET_ACCESS_KEY


def key_text():
    return f"baton-root-key-v1 {secrets.token_hex(32)}\n"


def proc(srv, name):
    with open(f"/proc/{srv.process.pid}/{name}") as f:
        return f.read()


def exits_with(srv, *needles):
    srv.start(wait=False)
    try:
        code = srv.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        srv.stop()
        raise AssertionError("the server started; it should have refused") from None
    log = srv.read_log()
    assert code != 0, log
    for needle in needles:
        assert needle in log, (needle, log[-2000:])
    return log


def test_the_server_cannot_dump_core_and_locks_its_memory(fresh):
    srv = fresh()
    srv.start()
    limits = [line for line in proc(srv, "limits").splitlines() if line.startswith("Max core file size")]
    assert limits and limits[0].split()[4:6] == ["0", "0"], limits
    status = dict(line.split(":", 1) for line in proc(srv, "status").splitlines() if ":" in line)
    if os.geteuid() == 0:
        # Root may lock without limit: MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT.
        assert int(status["VmLck"].split()[0]) > 0, status["VmLck"]
    log = srv.read_log()
    assert "process hardening" in log and "core_dumps_off=true" in log, log[-2000:]


def test_a_root_key_from_a_command_is_never_written_to_disk(fresh, tmp_path):
    key_file = tmp_path / "vault" / "key"
    key_file.parent.mkdir()
    key_file.write_text(key_text())
    srv = fresh(extra_args=["--root-key-command", f"cat {key_file}"])
    srv.start()
    srv.client().create_secret(Name="from-command", SecretString="kept-under-a-command-key")
    srv.stop()
    assert not (srv.data_dir / "root.key").exists()
    srv.start()
    assert srv.client().get_secret_value(SecretId="from-command")["SecretString"] == "kept-under-a-command-key"
    srv.stop()
    # Another key cannot open the store.
    key_file.write_text(key_text())
    exits_with(srv, "the deployment's root key is rk-", "does not hold it", f"command `cat {key_file}`")


def test_a_root_key_command_that_fails_or_prints_a_bad_key_is_refused(fresh):
    exits_with(fresh(extra_args=["--root-key-command", "echo no vault here >&2; exit 3"]),
               "root key command `echo no vault here >&2; exit 3`: exited with exit status: 3: no vault here")
    exits_with(fresh(extra_args=["--root-key-command", "echo baton-root-key-v1 abcd"]),
               "its output line 1: key must be 32 bytes (64 hex digits), not 2")
    exits_with(fresh(extra_args=["--root-key-command", "echo not a key"]),
               "its output line 1: does not start with baton-root-key-v1")


def test_a_root_key_wrapped_by_another_batons_kms_key(fresh):
    kms_server = fresh()
    kms_server.start()
    kms = kms_server.client("kms")
    arn = kms.create_key(Description="wraps another Baton's root key")["KeyMetadata"]["Arn"]
    env = {"AWS_ENDPOINT_URL_KMS": kms_server.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
           "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY}
    srv = fresh(extra_args=["--root-key-kms", arn], extra_env=env)
    srv.start()
    srv.client().create_secret(Name="under-kms", SecretString="wrapped-by-kms-value")
    srv.stop()
    assert not (srv.data_dir / "root.key").exists(), "only the wrapped key is on disk"
    wrapped = (srv.data_dir / "root.key.kms").read_text()
    assert wrapped.startswith(f"baton-root-key-kms-v1 {arn} ")
    assert oct((srv.data_dir / "root.key.kms").stat().st_mode & 0o777) == "0o600"
    srv.start()
    assert srv.client().get_secret_value(SecretId="under-kms")["SecretString"] == "wrapped-by-kms-value"
    srv.stop()
    # Disabling the KMS key takes the server's secrets offline: it refuses to start.
    kms.disable_key(KeyId=arn)
    exits_with(srv, f"unwrapping the root key with KMS key {arn} at {kms_server.endpoint}", "DisabledException")
    kms.enable_key(KeyId=arn)
    srv.start()
    assert srv.client().get_secret_value(SecretId="under-kms")["SecretString"] == "wrapped-by-kms-value"
