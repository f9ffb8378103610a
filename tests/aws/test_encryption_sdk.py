"""The AWS Encryption SDK CLI (`aws-encryption-cli`, pinned in requirements.txt) with a KMS
keyring on a Baton key: it calls GenerateDataKey to encrypt and Decrypt to decrypt, checks
that KMS answers with the key's ARN, and keeps the encryption context in the message.

The CLI finds Baton through botocore's `AWS_ENDPOINT_URL`, as any AWS tool can."""

import os
import subprocess
from pathlib import Path

import pytest

from conftest import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY

CLI = Path(os.environ.get("VIRTUAL_ENV", Path(__file__).resolve().parents[2] / ".venv")) / "bin" / "aws-encryption-cli"


def esdk(server, *args):
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "AWS_ENDPOINT_URL": server.endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": REGION,
    }
    return subprocess.run([str(CLI), *args], env=env, capture_output=True, text=True, timeout=60)


def test_a_file_encrypted_under_a_baton_key_decrypts_after_three_rotations(server, tmp_path):
    assert CLI.exists(), f"{CLI} missing: scripts/test installs tests/aws/requirements.txt"
    kms = server.client("kms")
    arn = kms.create_key(Description="encryption sdk")["KeyMetadata"]["Arn"]
    plain = tmp_path / "report.csv"
    plain.write_bytes(b"id,amount\n1,100\n2,250\n" * 200)
    sealed, opened = tmp_path / "report.csv.encrypted", tmp_path / "report.csv.decrypted"
    run = esdk(server, "--encrypt", "--input", str(plain), "--output", str(sealed),
               "--wrapping-keys", f"key={arn}", "--encryption-context", "purpose=test", "dept=finance",
               "--metadata-output", str(tmp_path / "encrypt.json"))
    assert run.returncode == 0, run.stderr
    assert sealed.read_bytes()[:1] == b"\x02", "a version 2 message, with key commitment"
    assert plain.read_bytes() not in sealed.read_bytes()

    for _ in range(3):
        kms.rotate_key_on_demand(KeyId=arn)
    assert len(kms.list_key_rotations(KeyId=arn)["Rotations"]) == 3

    run = esdk(server, "--decrypt", "--input", str(sealed), "--output", str(opened),
               "--wrapping-keys", f"key={arn}", "--encryption-context", "purpose=test",
               "--metadata-output", str(tmp_path / "decrypt.json"))
    assert run.returncode == 0, run.stderr
    assert opened.read_bytes() == plain.read_bytes()

    # The required context must be in the message: a wrong value is refused, and nothing is written.
    refused = tmp_path / "refused"
    run = esdk(server, "--decrypt", "--input", str(sealed), "--output", str(refused),
               "--wrapping-keys", f"key={arn}", "--encryption-context", "purpose=other",
               "--metadata-output", str(tmp_path / "refused.json"))
    # The CLI reports the failure and deletes its output, but exits 0.
    assert "Operation failed" in run.stderr and "encryption context" in run.stderr.lower(), run.stderr
    assert not refused.exists()


def test_decryption_with_another_key_or_a_disabled_one_fails(server, tmp_path):
    kms = server.client("kms")
    arn = kms.create_key()["KeyMetadata"]["Arn"]
    other = kms.create_key()["KeyMetadata"]["Arn"]
    plain, sealed = tmp_path / "p", tmp_path / "p.encrypted"
    plain.write_bytes(b"payload " * 64)
    run = esdk(server, "--encrypt", "--input", str(plain), "--output", str(sealed),
               "--wrapping-keys", f"key={arn}", "--metadata-output", "-")
    assert run.returncode == 0, run.stderr
    # Strict mode decrypts only with the keys named: another key cannot open the message.
    run = esdk(server, "--decrypt", "--input", str(sealed), "--output", str(tmp_path / "x"),
               "--wrapping-keys", f"key={other}", "--metadata-output", "-")
    assert run.returncode != 0 and not (tmp_path / "x").exists(), run.stderr
    # While the key is disabled, KMS refuses to decrypt its data key.
    kms.disable_key(KeyId=arn)
    run = esdk(server, "--decrypt", "--input", str(sealed), "--output", str(tmp_path / "y"),
               "--wrapping-keys", f"key={arn}", "--metadata-output", "-")
    assert "Unable to decrypt any data key" in run.stderr and not (tmp_path / "y").exists(), run.stderr
    kms.enable_key(KeyId=arn)
    run = esdk(server, "--decrypt", "--input", str(sealed), "--output", str(tmp_path / "z"),
               "--wrapping-keys", f"key={arn}", "--metadata-output", "-")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "z").read_bytes() == plain.read_bytes()
