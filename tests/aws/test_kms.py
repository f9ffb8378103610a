"""The AWS KMS API (`TrentService.*`) through boto3 against a running `baton serve`: every
operation's success and error paths, cross-checks against Python's `cryptography` and the
OpenSSL CLI, phased rotation of every key type, and the JWKS."""

import base64
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import awsraw


@pytest.fixture
def kms(server):
    return server.client("kms")


BLOBS = {"Plaintext", "CiphertextBlob", "Signature", "Message", "Mac", "PublicKey",
         "PrivateKeyCiphertextBlob", "PrivateKeyPlaintext"}


def raw(server, op, **params):
    """A KMS call that keeps Baton's extension members (BatonKeyVersionId and friends), which
    boto3 drops from responses and refuses in requests because AWS's model lacks them."""
    payload = {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v for k, v in params.items()}
    status, out = awsraw.call(server, f"TrentService.{op}", payload, service="kms")
    if status != 200:
        raise ClientError({"Error": {"Code": out.get("__type"), "Message": out.get("message")}}, op)
    return {k: base64.b64decode(v) if k in BLOBS and isinstance(v, str) else v for k, v in out.items()}


def current_version(server, key):
    return raw(server, "DescribeKey", KeyId=key)["KeyMetadata"]["BatonCurrentKeyVersionId"]


def error(excinfo):
    e = excinfo.value.response["Error"]
    return e["Code"], e["Message"]


def set_delay(server, key_id, seconds):
    status, out = awsraw.call(server, "baton.PutRotationPolicy",
                              {"KeyId": key_id, "PropagationDelaySeconds": seconds,
                               "RetireGraceSeconds": 0})
    assert status == 200, out
    return out


def rotate_and_wait(kms, server, key_id, timeout=60):
    version = raw(server, "RotateKeyOnDemand", KeyId=key_id)["BatonKeyVersionId"]
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = kms.get_key_rotation_status(KeyId=key_id)
        if "OnDemandRotationStartDate" not in status:
            return version
        time.sleep(0.05)
    raise AssertionError(f"rotation of {key_id} did not finish within {timeout}s: {status}")


# ---- Keys: create, describe, list, enable/disable, deletion ----

def test_create_key_defaults_and_describe(kms, server):
    meta = kms.create_key(Description="payments data")["KeyMetadata"]
    assert meta["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert meta["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert meta["KeyState"] == "Enabled" and meta["Enabled"] is True
    assert meta["Arn"] == f"arn:aws:kms:us-east-1:{server.account_id}:key/{meta['KeyId']}"
    assert meta["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    assert meta["Origin"] == "AWS_KMS" and meta["KeyManager"] == "CUSTOMER"
    uuid.UUID(meta["KeyId"])
    for ref in (meta["KeyId"], meta["Arn"]):
        assert kms.describe_key(KeyId=ref)["KeyMetadata"]["Description"] == "payments data"
    listed = [k["KeyId"] for k in kms.list_keys(Limit=1000)["Keys"]]
    assert meta["KeyId"] in listed


def test_every_key_spec_is_created_with_its_algorithms(kms):
    cases = {
        ("RSA_2048", "SIGN_VERIFY"): ("SigningAlgorithms", 6),
        ("RSA_3072", "ENCRYPT_DECRYPT"): ("EncryptionAlgorithms", 2),
        ("ECC_NIST_P256", "SIGN_VERIFY"): ("SigningAlgorithms", 1),
        ("ECC_NIST_P384", "SIGN_VERIFY"): ("SigningAlgorithms", 1),
        ("HMAC_256", "GENERATE_VERIFY_MAC"): ("MacAlgorithms", 1),
        ("HMAC_384", "GENERATE_VERIFY_MAC"): ("MacAlgorithms", 1),
        ("HMAC_512", "GENERATE_VERIFY_MAC"): ("MacAlgorithms", 1),
    }
    for (spec, usage), (member, count) in cases.items():
        meta = kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]
        assert meta["KeySpec"] == spec and meta["KeyUsage"] == usage
        assert len(meta[member]) == count, (spec, meta)


def test_create_key_refuses_bad_input_and_writes_nothing(kms):
    before = len(kms.list_keys(Limit=1000)["Keys"])
    with pytest.raises(ClientError) as e:
        kms.create_key(KeySpec="RSA_1024")
    code, message = error(e)
    assert code == "ValidationException" and "RSA_1024" in message and "keySpec" in message
    with pytest.raises(ClientError) as e:
        kms.create_key(KeySpec="HMAC_256", KeyUsage="ENCRYPT_DECRYPT")
    code, message = error(e)
    assert code == "ValidationException" and "GENERATE_VERIFY_MAC" in message
    with pytest.raises(ClientError) as e:
        kms.create_key(Origin="EXTERNAL")
    assert error(e)[0] == "UnsupportedOperationException"
    with pytest.raises(ClientError) as e:
        kms.create_key(Policy="{not json")
    assert error(e)[0] == "MalformedPolicyDocumentException"
    with pytest.raises(ClientError) as e:
        kms.create_key(Tags=[{"TagKey": "aws:reserved", "TagValue": "x"}])
    assert error(e)[0] == "TagException"
    with pytest.raises(ClientError) as e:
        kms.create_key(Description="x" * 8193)
    assert error(e)[0] == "ValidationException"
    assert len(kms.list_keys(Limit=1000)["Keys"]) == before


def test_unknown_keys_and_aliases_are_not_found(kms, server):
    missing = str(uuid.uuid4())
    with pytest.raises(ClientError) as e:
        kms.describe_key(KeyId=missing)
    assert error(e) == ("NotFoundException",
                        f"Key 'arn:aws:kms:us-east-1:{server.account_id}:key/{missing}' does not exist")
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId="alias/none-such", Plaintext=b"x")
    assert error(e) == ("NotFoundException",
                        f"Alias arn:aws:kms:us-east-1:{server.account_id}:alias/none-such is not found.")
    # Another account's ARN reaches nothing.
    with pytest.raises(ClientError) as e:
        kms.describe_key(KeyId=f"arn:aws:kms:us-east-1:000000000000:key/{missing}")
    assert error(e)[0] == "NotFoundException"


def test_disable_enable_and_the_deletion_window(kms):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"kept")["CiphertextBlob"]
    kms.disable_key(KeyId=key)
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Disabled"
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=key, Plaintext=b"x")
    assert error(e)[0] == "DisabledException" and key in error(e)[1]
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=blob)
    assert error(e)[0] == "DisabledException"
    kms.enable_key(KeyId=key)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"kept"
    for days in (6, 31):
        with pytest.raises(ClientError) as e:
            kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=days)
        assert error(e)[0] == "ValidationException" and "pendingWindowInDays" in error(e)[1]
    out = kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    assert out["KeyState"] == "PendingDeletion" and out["PendingWindowInDays"] == 7
    assert 6.9 * 86400 < out["DeletionDate"].timestamp() - time.time() < 7.1 * 86400
    meta = kms.describe_key(KeyId=key)["KeyMetadata"]
    assert meta["KeyState"] == "PendingDeletion" and "DeletionDate" in meta
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=blob)
    assert error(e)[0] == "KMSInvalidStateException" and "pending deletion" in error(e)[1]
    with pytest.raises(ClientError) as e:
        kms.enable_key(KeyId=key)
    assert error(e)[0] == "KMSInvalidStateException"
    kms.cancel_key_deletion(KeyId=key)
    # As in AWS, cancelling the deletion leaves the key disabled.
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Disabled"
    with pytest.raises(ClientError) as e:
        kms.cancel_key_deletion(KeyId=key)
    assert error(e)[0] == "KMSInvalidStateException"
    kms.enable_key(KeyId=key)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"kept"


def test_list_keys_pages_with_a_marker(kms):
    for _ in range(3):
        kms.create_key()
    everything = [k["KeyId"] for k in kms.list_keys(Limit=1000)["Keys"]]
    seen, marker = [], None
    while True:
        page = kms.list_keys(Limit=2, **({"Marker": marker} if marker else {}))
        seen += [k["KeyId"] for k in page["Keys"]]
        if not page["Truncated"]:
            break
        marker = page["NextMarker"]
    assert seen == everything
    with pytest.raises(ClientError) as e:
        kms.list_keys(Marker="not-a-marker")
    assert error(e)[0] == "InvalidMarkerException"


def test_keys_are_not_secrets(kms, sm, server):
    meta = kms.create_key()["KeyMetadata"]
    names = [s["Name"] for s in sm.list_secrets(MaxResults=100)["SecretList"]]
    assert not any(meta["KeyId"] in n for n in names)
    for ref in (meta["Arn"], f"kms:key/{meta['KeyId']}"):
        with pytest.raises(ClientError) as e:
            sm.get_secret_value(SecretId=ref)
        assert error(e)[0] == "ResourceNotFoundException"


# ---- Aliases, tags, key policies ----

def test_aliases_name_keys_move_and_go(kms, server):
    a = kms.create_key()["KeyMetadata"]["KeyId"]
    b = kms.create_key()["KeyMetadata"]["KeyId"]
    name = f"alias/app-{uuid.uuid4().hex[:8]}"
    kms.create_alias(AliasName=name, TargetKeyId=a)
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == a
    arn = f"arn:aws:kms:us-east-1:{server.account_id}:{name}"
    assert kms.describe_key(KeyId=arn)["KeyMetadata"]["KeyId"] == a
    blob = kms.encrypt(KeyId=name, Plaintext=b"via alias")["CiphertextBlob"]
    with pytest.raises(ClientError) as e:
        kms.create_alias(AliasName=name, TargetKeyId=b)
    assert error(e) == ("AlreadyExistsException", f"An alias with the name {arn} already exists")
    listed = kms.list_aliases(KeyId=a)["Aliases"]
    assert [x["AliasName"] for x in listed] == [name] and listed[0]["AliasArn"] == arn
    kms.update_alias(AliasName=name, TargetKeyId=b)
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == b
    assert kms.list_aliases(KeyId=a)["Aliases"] == []
    # Ciphertext names its key, not the alias: it still decrypts after the alias moved.
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"via alias"
    kms.delete_alias(AliasName=name)
    with pytest.raises(ClientError) as e:
        kms.delete_alias(AliasName=name)
    assert error(e)[0] == "NotFoundException"
    with pytest.raises(ClientError) as e:
        kms.update_alias(AliasName=name, TargetKeyId=a)
    assert error(e)[0] == "NotFoundException"


def test_alias_names_and_targets_are_checked(kms):
    sym = kms.create_key()["KeyMetadata"]["KeyId"]
    signer = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    pattern = ("1 validation error detected: Value '{}' at 'aliasName' failed to satisfy constraint: "
               "Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$")
    prefix = ('Alias must start with the prefix "alias/". Please see '
              "https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html")
    for bad, code, message in [
        ("alias/has space", "ValidationException", pattern.format("alias/has space")),
        ("alias/Service.Test", "ValidationException", pattern.format("alias/Service.Test")),
        ("app", "ValidationException", prefix),
        ("alias/Service:Test", "ValidationException", "alias/Service:Test contains invalid characters for an alias"),
        ("alias/aws/mine", "NotAuthorizedException",
         "Alias names that begin with alias/aws/ are reserved for AWS managed keys."),
    ]:
        for call in (lambda: kms.create_alias(AliasName=bad, TargetKeyId=sym),
                     lambda: kms.delete_alias(AliasName=bad)):
            with pytest.raises(ClientError) as e:
                call()
            assert error(e) == (code, message), bad
    name = f"alias/sym-{uuid.uuid4().hex[:8]}"
    kms.create_alias(AliasName=name, TargetKeyId=sym)
    with pytest.raises(ClientError) as e:
        kms.update_alias(AliasName=name, TargetKeyId=signer)
    code, message = error(e)
    assert code == "ValidationException" and "SIGN_VERIFY" in message
    with pytest.raises(ClientError) as e:
        kms.create_alias(AliasName=f"alias/x-{uuid.uuid4().hex[:6]}", TargetKeyId=name)
    assert error(e)[0] == "ValidationException"
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == sym


def test_tags_and_key_policy(kms, server):
    key = kms.create_key(Tags=[{"TagKey": "team", "TagValue": "pay"}])["KeyMetadata"]["KeyId"]
    kms.tag_resource(KeyId=key, Tags=[{"TagKey": "env", "TagValue": "prod"}])
    tags = {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=key)["Tags"]}
    assert tags == {"team": "pay", "env": "prod"}
    kms.untag_resource(KeyId=key, TagKeys=["team"])
    assert [t["TagKey"] for t in kms.list_resource_tags(KeyId=key)["Tags"]] == ["env"]
    with pytest.raises(ClientError) as e:
        kms.tag_resource(KeyId=key, Tags=[{"TagKey": "aws:owner", "TagValue": "x"}])
    assert error(e)[0] == "TagException" and "aws:owner" in error(e)[1]
    policy = json.loads(kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"])
    assert policy["Statement"][0]["Principal"]["AWS"] == f"arn:aws:iam::{server.account_id}:root"
    assert kms.list_key_policies(KeyId=key)["PolicyNames"] == ["default"]
    new = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
           "Principal": {"AWS": f"arn:aws:iam::{server.account_id}:root"}, "Action": "kms:*", "Resource": "*"},
           {"Sid": "NoDisable", "Effect": "Deny", "Principal": "*", "Action": "kms:DisableKey",
            "Resource": "*"}]}
    kms.put_key_policy(KeyId=key, PolicyName="default", Policy=json.dumps(new))
    assert json.loads(kms.get_key_policy(KeyId=key)["Policy"]) == new
    with pytest.raises(ClientError) as e:
        kms.put_key_policy(KeyId=key, PolicyName="default", Policy='{"Statement": [{"Effect": "Maybe"}]}')
    assert error(e)[0] == "MalformedPolicyDocumentException"
    assert json.loads(kms.get_key_policy(KeyId=key)["Policy"]) == new


# ---- Encrypt, Decrypt, ReEncrypt, data keys ----

def test_encrypt_decrypt_with_context_and_the_documented_blob(kms, server):
    meta = kms.create_key()["KeyMetadata"]
    out = raw(server, "Encrypt", KeyId=meta["KeyId"], Plaintext=b"card 4111", EncryptionContext={"tenant": "a"})
    assert out["KeyId"] == meta["Arn"] and out["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    blob = out["CiphertextBlob"]
    # The documented format: 0x01, the key's UUID, the version id, nonce, ciphertext, tag.
    assert blob[0] == 1
    assert blob[1:17] == uuid.UUID(meta["KeyId"]).bytes
    n = blob[17]
    assert blob[18:18 + n].decode() == out["BatonKeyVersionId"] == current_version(server, meta["KeyId"])
    assert len(blob) == 18 + n + 12 + len(b"card 4111") + 16
    plain = kms.decrypt(CiphertextBlob=blob, EncryptionContext={"tenant": "a"})
    assert plain["Plaintext"] == b"card 4111" and plain["KeyId"] == meta["Arn"]
    for ctx in ({}, {"tenant": "b"}, {"tenant": "a", "extra": "x"}):
        with pytest.raises(ClientError) as e:
            kms.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)
        assert error(e)[0] == "InvalidCiphertextException"
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=bytes(tampered), EncryptionContext={"tenant": "a"})
    assert error(e)[0] == "InvalidCiphertextException"
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=b"\x07garbage-garbage-garbage-garbage-garbage")
    assert error(e)[0] == "InvalidCiphertextException"
    other = kms.create_key()["KeyMetadata"]["KeyId"]
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"tenant": "a"}, KeyId=other)
    assert error(e)[0] == "IncorrectKeyException"
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"tenant": "a"},
                       KeyId=meta["Arn"])["Plaintext"] == b"card 4111"


def test_encrypt_checks_sizes_and_usage(kms):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    assert kms.decrypt(CiphertextBlob=kms.encrypt(KeyId=key, Plaintext=b"x" * 4096)["CiphertextBlob"])[
        "Plaintext"] == b"x" * 4096
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=key, Plaintext=b"x" * 4097)
    assert error(e)[0] == "ValidationException" and "plaintext" in error(e)[1]
    signer = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=signer, Plaintext=b"x")
    code, message = error(e)
    assert code == "InvalidKeyUsageException" and "SIGN_VERIFY" in message
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=key, Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert error(e)[0] == "InvalidKeyUsageException"


def test_rsa_encryption_keys_interoperate_with_cryptography(kms):
    key = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    public = serialization.load_der_public_key(kms.get_public_key(KeyId=key)["PublicKey"])
    for alg, digest in (("RSAES_OAEP_SHA_256", hashes.SHA256()), ("RSAES_OAEP_SHA_1", hashes.SHA1())):
        oaep = padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)
        # Encrypted outside Baton with the published public key, decrypted by Baton.
        blob = public.encrypt(b"outside in", oaep)
        out = kms.decrypt(CiphertextBlob=blob, KeyId=key, EncryptionAlgorithm=alg)
        assert out["Plaintext"] == b"outside in"
        # Encrypted by Baton, decrypted by Baton (the private key never leaves).
        blob = kms.encrypt(KeyId=key, Plaintext=b"inside", EncryptionAlgorithm=alg)["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob, KeyId=key, EncryptionAlgorithm=alg)["Plaintext"] == b"inside"
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=blob, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert error(e)[0] == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=key, Plaintext=b"x" * 200, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert error(e)[0] == "ValidationException" and "190" in error(e)[1]


def test_re_encrypt_moves_ciphertext_between_keys(kms):
    a = kms.create_key()["KeyMetadata"]["Arn"]
    b = kms.create_key()["KeyMetadata"]["Arn"]
    blob = kms.encrypt(KeyId=a, Plaintext=b"move me", EncryptionContext={"k": "1"})["CiphertextBlob"]
    out = kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext={"k": "1"},
                         DestinationKeyId=b, DestinationEncryptionContext={"k": "2"})
    assert out["SourceKeyId"] == a and out["KeyId"] == b
    assert kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext={"k": "2"})["Plaintext"] == b"move me"
    with pytest.raises(ClientError) as e:
        kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=b)
    assert error(e)[0] == "InvalidCiphertextException"


def test_data_keys_work_with_an_independent_aes_gcm(kms):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    out = kms.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext={"file": "f1"})
    assert len(out["Plaintext"]) == 32
    # The wrapped copy decrypts to the same key...
    assert kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext={"file": "f1"})[
        "Plaintext"] == out["Plaintext"]
    # ...and that key encrypts and decrypts with an independent AES-GCM, as envelope encryption
    # with Baton's data keys does.
    nonce = os.urandom(12)
    sealed = AESGCM(out["Plaintext"]).encrypt(nonce, b"bulk data", b"aad")
    recovered = kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext={"file": "f1"})["Plaintext"]
    assert AESGCM(recovered).decrypt(nonce, sealed, b"aad") == b"bulk data"
    assert len(kms.generate_data_key(KeyId=key, KeySpec="AES_128")["Plaintext"]) == 16
    assert len(kms.generate_data_key(KeyId=key, NumberOfBytes=64)["Plaintext"]) == 64
    bare = kms.generate_data_key_without_plaintext(KeyId=key, KeySpec="AES_256")
    assert "Plaintext" not in bare
    assert len(kms.decrypt(CiphertextBlob=bare["CiphertextBlob"])["Plaintext"]) == 32
    for kwargs in ({}, {"KeySpec": "AES_256", "NumberOfBytes": 32}):
        with pytest.raises(ClientError) as e:
            kms.generate_data_key(KeyId=key, **kwargs)
        assert error(e) == ("ValidationException", "Please specify either number of bytes or key spec.")
    with pytest.raises(ClientError) as e:
        kms.generate_data_key(KeyId=key, NumberOfBytes=1025)
    assert error(e)[0] == "ValidationException"
    signer = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    with pytest.raises(ClientError) as e:
        kms.generate_data_key(KeyId=signer, KeySpec="AES_256")
    assert error(e)[0] == "InvalidKeyUsageException"


def test_data_key_pairs_are_real_key_pairs(kms):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    for spec in ("RSA_2048", "ECC_NIST_P256", "ECC_NIST_P384"):
        out = kms.generate_data_key_pair(KeyId=key, KeyPairSpec=spec)
        private = serialization.load_der_private_key(out["PrivateKeyPlaintext"], password=None)
        public_der = private.public_key().public_bytes(serialization.Encoding.DER,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)
        assert public_der == out["PublicKey"]
        assert kms.decrypt(CiphertextBlob=out["PrivateKeyCiphertextBlob"])["Plaintext"] == out["PrivateKeyPlaintext"]
    bare = kms.generate_data_key_pair_without_plaintext(KeyId=key, KeyPairSpec="ECC_NIST_P256")
    assert "PrivateKeyPlaintext" not in bare and bare["PublicKey"]
    with pytest.raises(ClientError) as e:
        kms.generate_data_key_pair(KeyId=key, KeyPairSpec="SM2")
    assert error(e)[0] == "ValidationException"


def test_generate_random(kms, server):
    assert len(kms.generate_random(NumberOfBytes=32)["Plaintext"]) == 32
    assert kms.generate_random(NumberOfBytes=16)["Plaintext"] != kms.generate_random(NumberOfBytes=16)["Plaintext"]
    with pytest.raises(ClientError) as e:
        kms.generate_random(NumberOfBytes=1025)
    assert error(e)[0] == "ValidationException" and "numberOfBytes" in error(e)[1]
    # boto3 refuses 0 itself; the server refuses it too.
    with pytest.raises(ClientError) as e:
        raw(server, "GenerateRandom", NumberOfBytes=0)
    assert error(e)[0] == "ValidationException"


# ---- Sign, Verify, GetPublicKey, MACs ----

SIGNING = {
    "RSASSA_PSS_SHA_256": (hashes.SHA256(), "pss"),
    "RSASSA_PSS_SHA_384": (hashes.SHA384(), "pss"),
    "RSASSA_PSS_SHA_512": (hashes.SHA512(), "pss"),
    "RSASSA_PKCS1_V1_5_SHA_256": (hashes.SHA256(), "pkcs1"),
    "RSASSA_PKCS1_V1_5_SHA_384": (hashes.SHA384(), "pkcs1"),
    "RSASSA_PKCS1_V1_5_SHA_512": (hashes.SHA512(), "pkcs1"),
    "ECDSA_SHA_256": (hashes.SHA256(), "ecdsa"),
    "ECDSA_SHA_384": (hashes.SHA384(), "ecdsa"),
}


def verify_outside(public, alg, message, signature, prehashed=False):
    digest, kind = SIGNING[alg]
    algorithm = utils.Prehashed(digest) if prehashed else digest
    if kind == "ecdsa":
        public.verify(signature, message, ec.ECDSA(algorithm))
    elif kind == "pss":
        # KMS's PSS salt is the digest's length.
        public.verify(signature, message, padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size),
                      algorithm)
    else:
        public.verify(signature, message, padding.PKCS1v15(), algorithm)


@pytest.mark.parametrize("spec,algs", [
    ("RSA_2048", [a for a in SIGNING if a.startswith("RSASSA")]),
    ("ECC_NIST_P256", ["ECDSA_SHA_256"]),
    ("ECC_NIST_P384", ["ECDSA_SHA_384"]),
])
def test_signatures_verify_with_cryptography_and_digests_from_outside_sign(kms, server, spec, algs):
    key = kms.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    pub = raw(server, "GetPublicKey", KeyId=key)
    assert pub["KeySpec"] == spec and pub["KeyUsage"] == "SIGN_VERIFY"
    public = serialization.load_der_public_key(pub["PublicKey"])
    message = b"the message " * 10
    for alg in algs:
        out = raw(server, "Sign", KeyId=key, Message=message, SigningAlgorithm=alg)
        assert out["BatonKeyVersionId"] == pub["BatonKeyVersionId"]
        verify_outside(public, alg, message, out["Signature"])
        assert kms.verify(KeyId=key, Message=message, Signature=out["Signature"],
                          SigningAlgorithm=alg)["SignatureValid"] is True
        # A digest computed outside Baton is signed as the message's signature.
        h = hashes.Hash(SIGNING[alg][0])
        h.update(message)
        digest = h.finalize()
        out = kms.sign(KeyId=key, Message=digest, MessageType="DIGEST", SigningAlgorithm=alg)
        verify_outside(public, alg, message, out["Signature"])
        verify_outside(public, alg, digest, out["Signature"], prehashed=True)
        assert kms.verify(KeyId=key, Message=digest, MessageType="DIGEST", Signature=out["Signature"],
                          SigningAlgorithm=alg)["SignatureValid"] is True
        with pytest.raises(ClientError) as e:
            kms.verify(KeyId=key, Message=message + b"!", Signature=out["Signature"], SigningAlgorithm=alg)
        assert error(e)[0] == "KMSInvalidSignatureException"


def test_openssl_verifies_a_baton_signature(kms, tmp_path):
    key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    (tmp_path / "pub.der").write_bytes(kms.get_public_key(KeyId=key)["PublicKey"])
    (tmp_path / "msg").write_bytes(b"signed by baton")
    (tmp_path / "sig").write_bytes(kms.sign(KeyId=key, Message=b"signed by baton",
                                            SigningAlgorithm="ECDSA_SHA_256")["Signature"])
    ok = subprocess.run(["openssl", "dgst", "-sha256", "-keyform", "DER", "-verify", str(tmp_path / "pub.der"),
                         "-signature", str(tmp_path / "sig"), str(tmp_path / "msg")], capture_output=True, text=True)
    assert ok.returncode == 0 and "Verified OK" in ok.stdout, ok.stderr
    (tmp_path / "msg").write_bytes(b"signed by baton?")
    bad = subprocess.run(["openssl", "dgst", "-sha256", "-keyform", "DER", "-verify", str(tmp_path / "pub.der"),
                          "-signature", str(tmp_path / "sig"), str(tmp_path / "msg")], capture_output=True, text=True)
    assert bad.returncode != 0


def test_signing_errors(kms):
    key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    with pytest.raises(ClientError) as e:
        kms.sign(KeyId=key, Message=b"m", SigningAlgorithm="RSASSA_PSS_SHA_256")
    assert error(e)[0] == "InvalidKeyUsageException" and "ECDSA_SHA_256" in error(e)[1]
    with pytest.raises(ClientError) as e:
        kms.sign(KeyId=key, Message=b"short", MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")
    assert error(e)[0] == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms.sign(KeyId=key, Message=b"x" * 4097, SigningAlgorithm="ECDSA_SHA_256")
    assert error(e)[0] == "ValidationException"
    sym = kms.create_key()["KeyMetadata"]["KeyId"]
    with pytest.raises(ClientError) as e:
        kms.sign(KeyId=sym, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
    assert error(e)[0] == "InvalidKeyUsageException"
    with pytest.raises(ClientError) as e:
        kms.get_public_key(KeyId=sym)
    assert error(e)[0] == "UnsupportedOperationException"


def test_macs(kms):
    key = kms.create_key(KeySpec="HMAC_384", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    out = kms.generate_mac(KeyId=key, Message=b"m", MacAlgorithm="HMAC_SHA_384")
    assert len(out["Mac"]) == 48
    assert kms.verify_mac(KeyId=key, Message=b"m", Mac=out["Mac"], MacAlgorithm="HMAC_SHA_384")["MacValid"] is True
    with pytest.raises(ClientError) as e:
        kms.verify_mac(KeyId=key, Message=b"n", Mac=out["Mac"], MacAlgorithm="HMAC_SHA_384")
    assert error(e)[0] == "KMSInvalidMacException"
    with pytest.raises(ClientError) as e:
        kms.generate_mac(KeyId=key, Message=b"m", MacAlgorithm="HMAC_SHA_256")
    assert error(e)[0] == "InvalidKeyUsageException"


# ---- Rotation through the phase machine ----

def test_automatic_rotation_is_scheduled_and_switched_off(kms, server):
    key = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    assert kms.get_key_rotation_status(KeyId=key)["KeyRotationEnabled"] is False
    for days in (89, 2561):
        # boto3 refuses these itself; the server refuses them too.
        with pytest.raises(ClientError) as e:
            raw(server, "EnableKeyRotation", KeyId=key, RotationPeriodInDays=days)
        assert error(e)[0] == "ValidationException" and "rotationPeriodInDays" in error(e)[1]
    kms.enable_key_rotation(KeyId=key, RotationPeriodInDays=90)
    status = kms.get_key_rotation_status(KeyId=key)
    assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 90
    # The engine's schedule picks a moment in the day the period ends.
    assert 89 * 86400 < status["NextRotationDate"].timestamp() - time.time() < 91 * 86400
    kms.enable_key_rotation(KeyId=key)
    assert kms.get_key_rotation_status(KeyId=key)["RotationPeriodInDays"] == 365
    kms.disable_key_rotation(KeyId=key)
    status = kms.get_key_rotation_status(KeyId=key)
    assert status["KeyRotationEnabled"] is False and "NextRotationDate" not in status
    kms.disable_key(KeyId=key)
    with pytest.raises(ClientError) as e:
        kms.enable_key_rotation(KeyId=key)
    assert error(e)[0] == "DisabledException"
    with pytest.raises(ClientError) as e:
        kms.rotate_key_on_demand(KeyId=key)
    assert error(e)[0] == "DisabledException"


def test_ciphertext_from_before_ten_rotations_still_decrypts(kms, server):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    set_delay(server, key, 0)
    blobs = [(raw(server, "Encrypt", KeyId=key, Plaintext=b"gen 0", EncryptionContext={"g": "0"}), b"gen 0", {"g": "0"})]
    versions = [blobs[0][0]["BatonKeyVersionId"]]
    for i in range(1, 11):
        versions.append(rotate_and_wait(kms, server, key))
        out = raw(server, "Encrypt", KeyId=key, Plaintext=f"gen {i}".encode(), EncryptionContext={"g": str(i)})
        assert out["BatonKeyVersionId"] == versions[-1], "the new version encrypts once promoted"
        blobs.append((out, f"gen {i}".encode(), {"g": str(i)}))
    assert len(set(versions)) == 11
    for out, plain, ctx in blobs:
        back = raw(server, "Decrypt", CiphertextBlob=out["CiphertextBlob"], EncryptionContext=ctx)
        assert back["Plaintext"] == plain and back["BatonKeyVersionId"] == out["BatonKeyVersionId"]
    assert [r["RotationType"] for r in kms.list_key_rotations(KeyId=key)["Rotations"]] == ["ON_DEMAND"] * 10
    rotations = raw(server, "ListKeyRotations", KeyId=key)["Rotations"]
    assert [r["BatonKeyVersionId"] for r in rotations] == versions[1:]
    assert all(r["RotationType"] == "ON_DEMAND" for r in rotations)
    assert [r["BatonKeyVersionState"] for r in rotations][-1] == "current"
    # AWS's quota: ten on-demand rotations per key, and no more.
    with pytest.raises(ClientError) as e:
        kms.rotate_key_on_demand(KeyId=key)
    code, message = error(e)
    assert code == "LimitExceededException" and "10 times" in message


def test_symmetric_and_hmac_keys_rotate_at_once(kms, server):
    """Their material never leaves Baton, so there is nobody to wait for: the new version is
    current when RotateKeyOnDemand answers, and a second rotation right after succeeds."""
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    first = raw(server, "Encrypt", KeyId=key, Plaintext=b"before")
    versions = [first["BatonKeyVersionId"]]
    for _ in range(2):
        versions.append(raw(server, "RotateKeyOnDemand", KeyId=key)["BatonKeyVersionId"])
        assert raw(server, "Encrypt", KeyId=key, Plaintext=b"x")["BatonKeyVersionId"] == versions[-1], \
            "the new version encrypts as soon as RotateKeyOnDemand answers"
        assert "OnDemandRotationStartDate" not in kms.get_key_rotation_status(KeyId=key)
    assert raw(server, "Decrypt", CiphertextBlob=first["CiphertextBlob"])["Plaintext"] == b"before"
    rotations = raw(server, "ListKeyRotations", KeyId=key)["Rotations"]
    assert [(r["BatonKeyVersionId"], r["RotationType"], r["BatonKeyVersionState"]) for r in rotations] \
        == [(versions[1], "ON_DEMAND", "previous"), (versions[2], "ON_DEMAND", "current")]

    mac_key = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    old = raw(server, "GenerateMac", KeyId=mac_key, Message=b"m", MacAlgorithm="HMAC_SHA_256")
    new_version = raw(server, "RotateKeyOnDemand", KeyId=mac_key)["BatonKeyVersionId"]
    new = raw(server, "GenerateMac", KeyId=mac_key, Message=b"m", MacAlgorithm="HMAC_SHA_256")
    assert new["BatonKeyVersionId"] == new_version != old["BatonKeyVersionId"]
    # A MAC made just before the rotation still verifies: the old version is AWSPREVIOUS.
    assert kms.verify_mac(KeyId=mac_key, Message=b"m", Mac=old["Mac"],
                          MacAlgorithm="HMAC_SHA_256")["MacValid"] is True
    kms.rotate_key_on_demand(KeyId=mac_key)
    with pytest.raises(ClientError) as e:
        kms.verify_mac(KeyId=mac_key, Message=b"m", Mac=old["Mac"], MacAlgorithm="HMAC_SHA_256")
    assert error(e)[0] == "KMSInvalidMacException", "two rotations later the first version is retired"


def test_asymmetric_keys_rotate_in_phases_and_old_versions_retire(kms, server):
    for spec, usage, alg in (("RSA_2048", "SIGN_VERIFY", "RSASSA_PSS_SHA_256"),
                             ("ECC_NIST_P256", "SIGN_VERIFY", "ECDSA_SHA_256")):
        key = kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["KeyId"]
        set_delay(server, key, 0)
        mac = usage == "GENERATE_VERIFY_MAC"

        def make(message):
            if mac:
                out = raw(server, "GenerateMac", KeyId=key, Message=message, MacAlgorithm=alg)
                return out["Mac"], out["BatonKeyVersionId"]
            out = raw(server, "Sign", KeyId=key, Message=message, SigningAlgorithm=alg)
            return out["Signature"], out["BatonKeyVersionId"]

        def check(message, tag):
            if mac:
                return raw(server, "VerifyMac", KeyId=key, Message=message, Mac=tag,
                           MacAlgorithm=alg)["BatonKeyVersionId"]
            return raw(server, "Verify", KeyId=key, Message=message, Signature=tag,
                       SigningAlgorithm=alg)["BatonKeyVersionId"]

        old_tag, old_version = make(b"before")
        new_version = rotate_and_wait(kms, server, key)
        new_tag, signer = make(b"after")
        assert signer == new_version != old_version
        assert check(b"after", new_tag) == new_version
        # The old version is retired: kept (ListKeyRotations, audit), no longer accepted.
        states = {r["BatonKeyVersionId"]: r["BatonKeyVersionState"]
                  for r in raw(server, "ListKeyRotations", KeyId=key)["Rotations"]}
        assert states == {new_version: "current"}
        with pytest.raises(ClientError) as e:
            check(b"before", old_tag)
        assert error(e)[0] in ("KMSInvalidSignatureException", "KMSInvalidMacException"), spec


def test_a_pending_version_verifies_before_it_signs(kms, server):
    """With a long propagation delay the new version sits at the propagation gate: it is in the
    JWKS and verifies, but Sign still uses the old version and refuses the pending one."""
    key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    set_delay(server, key, 3600)
    old = current_version(server, key)
    # A verifier has read the JWKS: the gate now waits the propagation delay for its cache.
    # (With no reader of any kind, nobody could hold a stale key set and the gate would pass.)
    assert fetch_jwks(server, key)[0] == 200
    pending = raw(server, "RotateKeyOnDemand", KeyId=key)["BatonKeyVersionId"]
    deadline = time.time() + 20
    kids = []
    while time.time() < deadline:
        kids = [k["kid"] for k in json.loads(urllib.request.urlopen(f"{server.endpoint}/jwks/{key}").read())["keys"]]
        if pending in kids:
            break
        time.sleep(0.05)
    assert kids == [old, pending]
    assert raw(server, "Sign", KeyId=key, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")["BatonKeyVersionId"] == old
    with pytest.raises(ClientError) as e:
        raw(server, "Sign", KeyId=key, Message=b"m", SigningAlgorithm="ECDSA_SHA_256", BatonKeyVersionId=pending)
    code, message = error(e)
    assert code == "KMSInvalidStateException" and "pending" in message
    status = raw(server, "GetKeyRotationStatus", KeyId=key)
    assert status["BatonRotationPhase"] in ("tested", "created", "set")
    with pytest.raises(ClientError) as e:
        kms.rotate_key_on_demand(KeyId=key)
    assert error(e)[0] == "ConflictException"
    status, out = awsraw.call(server, "baton.DescribeRotation", {"KeyId": key})
    assert status == 200 and out["VersionId"] == pending and out["Policy"]["PropagationDelaySeconds"] == 3600


# ---- JWKS ----

def fetch_jwks(server, key, etag=None):
    request = urllib.request.Request(f"{server.endpoint}/jwks/{key}",
                                     headers={"If-None-Match": etag} if etag else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, json.loads(r.read() or b"{}"), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}"), {k.lower(): v for k, v in e.headers.items()}


def test_jwks_serves_accepted_public_keys_with_caching_headers(kms, server):
    meta = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    alias = f"alias/jwks-{uuid.uuid4().hex[:8]}"
    kms.create_alias(AliasName=alias, TargetKeyId=meta["KeyId"])
    status, body, headers = fetch_jwks(server, alias)
    assert status == 200
    [jwk] = body["keys"]
    assert jwk["kid"] == current_version(server, meta["KeyId"]) and jwk["alg"] == "RS256" and jwk["kty"] == "RSA"
    assert headers["cache-control"].startswith("public, max-age=")
    numbers = serialization.load_der_public_key(kms.get_public_key(KeyId=meta["KeyId"])["PublicKey"]).public_numbers()
    assert int.from_bytes(b64url(jwk["n"]), "big") == numbers.n
    status, _, again = fetch_jwks(server, meta["KeyId"], etag=headers["etag"])
    assert status == 304 and again["etag"] == headers["etag"]
    assert fetch_jwks(server, "alias/nothing-here")[0] == 404
    sym = kms.create_key()["KeyMetadata"]["KeyId"]
    assert fetch_jwks(server, sym)[0] == 404


def b64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Verifier:
    """A JWT verifier as a service would run one: it caches the JWKS for its max-age, refreshes
    when the cache is stale, and refreshes once more on a kid it does not know."""

    def __init__(self, server, key):
        self.server, self.key = server, key
        self.keys, self.expires, self.etag = {}, 0.0, None
        self.unknown_kid_refreshes = 0

    def refresh(self):
        # As an HTTP cache counts freshness (RFC 9111, 4.2.3): from when the request was sent,
        # since the answer may have waited in a busy server or network before it arrived.
        requested = time.time()
        status, body, headers = fetch_jwks(self.server, self.key, self.etag)
        assert status in (200, 304), (status, body)
        if status == 200:
            self.keys = {k["kid"]: k for k in body["keys"]}
            self.etag = headers.get("etag")
        max_age = int(headers["cache-control"].split("max-age=")[1])
        self.expires = requested + max_age

    def verify(self, token):
        header, payload, signature = token.split(".")
        kid = json.loads(b64url(header))["kid"]
        if time.time() >= self.expires:
            self.refresh()
        if kid not in self.keys:
            self.unknown_kid_refreshes += 1
            self.refresh()
        jwk = self.keys[kid]
        public = rsa.RSAPublicNumbers(int.from_bytes(b64url(jwk["e"]), "big"),
                                      int.from_bytes(b64url(jwk["n"]), "big")).public_key()
        public.verify(b64url(signature), f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return kid


def sign_jwt(server, key, claims):
    """Names the current version as kid, then signs with exactly that version."""
    while True:
        kid = current_version(server, key)
        enc = lambda obj: base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
        signing_input = f"{enc({'alg': 'RS256', 'typ': 'JWT', 'kid': kid})}.{enc(claims)}"
        try:
            out = raw(server, "Sign", KeyId=key, Message=signing_input.encode(),
                      SigningAlgorithm="RSASSA_PKCS1_V1_5_SHA_256", BatonKeyVersionId=kid)
        except ClientError as e:
            if e.response["Error"]["Code"] == "KMSInvalidStateException":
                continue  # retired between the two calls: name the new current version
            raise
        sig = base64.urlsafe_b64encode(out["Signature"]).rstrip(b"=").decode()
        return f"{signing_input}.{sig}"


def test_a_jwks_verifier_keeps_verifying_through_five_rsa_rotations(kms, server):
    key = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    # T = 4 s, so max-age is 2 s: a verifier stalled for a second on a loaded machine still
    # refreshes within T of the pending key's publication.
    set_delay(server, key, 4)
    verifier = Verifier(server, key)
    stop = threading.Event()
    results = {"verified": 0, "failures": [], "kids": set()}

    def traffic():
        n = 0
        while not stop.is_set():
            n += 1
            token = sign_jwt(server, key, {"sub": "user", "n": n})
            try:
                results["kids"].add(verifier.verify(token))
                results["verified"] += 1
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                results["failures"].append(repr(e))
            time.sleep(0.02)

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        versions = [rotate_and_wait(kms, server, key, timeout=90) for _ in range(5)]
    finally:
        stop.set()
        thread.join(timeout=30)
    assert results["failures"] == []
    assert results["verified"] > 50
    # Tokens were signed by the first version and by each of the five new ones.
    assert set(versions) <= results["kids"] and len(results["kids"]) == 6
    # Phasing, not the fallback, carried every new kid: the verifier's cache, refreshed only as
    # its max-age allowed, already held each version before the first token it signed.
    assert verifier.unknown_kid_refreshes == 0
    _, body, _ = fetch_jwks(server, key)
    assert [k["kid"] for k in body["keys"]] == [versions[-1]]


# ---- Authorization on keys ----

def test_key_permissions_follow_identity_policies(kms, server):
    allowed = kms.create_key()["KeyMetadata"]
    other = kms.create_key()["KeyMetadata"]
    name = f"kms-user-{uuid.uuid4().hex[:8]}"
    assert awsraw.call(server, "baton.CreatePrincipal", {"Name": name, "Kind": "service"})[0] == 200
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt"],
                                                      "Resource": allowed["Arn"]}]}
    assert awsraw.call(server, "baton.PutPrincipalPolicy",
                       {"PrincipalName": name, "PolicyName": "one-key", "PolicyDocument": json.dumps(policy)})[0] == 200
    status, creds = awsraw.call(server, "baton.CreateAccessKey", {"PrincipalName": name})
    assert status == 200
    user = server.client("kms", access_key=creds["AccessKey"]["AccessKeyId"],
                         secret_key=creds["AccessKey"]["SecretAccessKey"])
    blob = user.encrypt(KeyId=allowed["KeyId"], Plaintext=b"ok")["CiphertextBlob"]
    assert user.decrypt(CiphertextBlob=blob)["Plaintext"] == b"ok"
    with pytest.raises(ClientError) as e:
        user.encrypt(KeyId=other["KeyId"], Plaintext=b"no")
    code, message = error(e)
    assert code == "AccessDeniedException" and "kms:Encrypt" in message and other["Arn"] in message
    with pytest.raises(ClientError) as e:
        user.create_key()
    assert error(e)[0] == "AccessDeniedException"
    # A key policy's explicit deny overrides the identity policy.
    deny = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{server.account_id}:root"}, "Action": "kms:*",
         "Resource": "*"},
        {"Sid": "NoDecrypt", "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}]}
    kms.put_key_policy(KeyId=allowed["KeyId"], PolicyName="default", Policy=json.dumps(deny))
    with pytest.raises(ClientError) as e:
        user.decrypt(CiphertextBlob=blob)
    assert error(e)[0] == "AccessDeniedException" and "explicit deny" in error(e)[1]


def test_the_aws_cli_encrypts_and_decrypts(server, tmp_path):
    from test_cli import AWS, env_for
    run = lambda *args: json.loads(subprocess.run(
        [AWS, "--endpoint-url", server.endpoint, "kms", *args, "--output", "json"], env=env_for(server),
        capture_output=True, text=True, timeout=60, check=True).stdout)
    key = run("create-key", "--description", "cli")["KeyMetadata"]["KeyId"]
    (tmp_path / "plain").write_bytes(b"from the aws cli")
    blob = run("encrypt", "--key-id", key, "--plaintext", f"fileb://{tmp_path / 'plain'}")["CiphertextBlob"]
    (tmp_path / "blob").write_bytes(base64.b64decode(blob))
    out = run("decrypt", "--ciphertext-blob", f"fileb://{tmp_path / 'blob'}")
    assert base64.b64decode(out["Plaintext"]) == b"from the aws cli"


def test_the_baton_cli_covers_keys(server, tmp_path):
    from test_cli import baton
    alias = f"alias/cli-{uuid.uuid4().hex[:8]}"
    key = baton(server, "key", "create", "--description", "cli key", "--alias", alias).stdout.strip()
    uuid.UUID(key)
    assert key in baton(server, "key", "list").stdout
    blob = baton(server, "key", "encrypt", alias, "--text", "from the baton cli", "--context", "app=web").stdout
    out = baton(server, "key", "decrypt", "--context", "app=web", input=blob)
    assert out.stdout == "from the baton cli"
    wrong = baton(server, "key", "decrypt", "--context", "app=api", input=blob, check=False)
    assert wrong.returncode != 0 and "InvalidCiphertextException" in wrong.stderr
    signer = baton(server, "key", "create", "--spec", "ECC_NIST_P256").stdout.strip()
    assert json.loads(baton(server, "key", "describe", signer, "--output", "json").stdout)[
        "KeyMetadata"]["KeyUsage"] == "SIGN_VERIFY"
    (tmp_path / "msg").write_bytes(b"release 1.2.3")
    sig = baton(server, "key", "sign", signer, "--algorithm", "ECDSA_SHA_256", "--file", str(tmp_path / "msg")).stdout
    ok = baton(server, "key", "verify", signer, "--algorithm", "ECDSA_SHA_256", "--signature", sig,
               "--file", str(tmp_path / "msg"))
    assert "valid" in ok.stdout
    bad = baton(server, "key", "verify", signer, "--algorithm", "ECDSA_SHA_256", "--signature", sig,
                "--text", "release 1.2.4", check=False)
    assert bad.returncode != 0 and "KMSInvalidSignatureException" in bad.stderr
    set_delay(server, signer, 0)
    old = json.loads(baton(server, "key", "jwks", signer).stdout)["keys"][0]["kid"]
    rotated = baton(server, "key", "rotate", signer, "--wait")
    new = rotated.stdout.strip()
    assert "phase promoted" in rotated.stderr and "rotation Succeeded" in rotated.stderr, rotated.stderr
    assert [k["kid"] for k in json.loads(baton(server, "key", "jwks", signer).stdout)["keys"]] == [new]
    assert new != old
    described = baton(server, "key", "describe", signer).stdout
    assert new in described and "current" in described
    moved = baton(server, "key", "alias", "update", alias, signer, check=False)
    assert moved.returncode != 0 and "same type and usage" in moved.stderr
    aliases = baton(server, "key", "alias", "list").stdout
    assert alias in aliases and key in aliases
    baton(server, "key", "alias", "delete", alias)
    assert alias not in baton(server, "key", "alias", "list").stdout
    assert "every 90 days" in (baton(server, "key", "rotate", key, "--every-days", "90").stdout.replace(
        "rotates every", "every"))


# ---- Secrets under a chosen key ----

def test_a_secret_under_a_kms_key_is_rewrapped_lazily_and_follows_the_key_state(kms, sm, server, unique_name):
    key = kms.create_key(Description="wraps secrets")["KeyMetadata"]["KeyId"]
    set_delay(server, key, 0)
    first = current_version(server, key)
    sm.create_secret(Name=unique_name, SecretString="under a customer key", KmsKeyId=key)
    assert sm.describe_secret(SecretId=unique_name)["KmsKeyId"] == key
    assert sm.get_secret_value(SecretId=unique_name)["SecretString"] == "under a customer key"
    # Rotating the key re-encrypts nothing: the secret still reads, its data key wrapped by the
    # old version, until its next write moves the wrap to the current version.
    second = rotate_and_wait(kms, server, key)
    assert second != first
    assert sm.get_secret_value(SecretId=unique_name)["SecretString"] == "under a customer key"
    sm.put_secret_value(SecretId=unique_name, SecretString="second value")
    assert sm.get_secret_value(SecretId=unique_name)["SecretString"] == "second value"
    assert sm.get_secret_value(SecretId=unique_name, VersionStage="AWSPREVIOUS")["SecretString"] == "under a customer key"
    # Disabling the key stops reads of what it protects, as in AWS; enabling restores them.
    kms.disable_key(KeyId=key)
    with pytest.raises(ClientError) as e:
        sm.get_secret_value(SecretId=unique_name)
    assert error(e)[0] == "DecryptionFailure"
    sm.tag_resource(SecretId=unique_name, Tags=[{"Key": "still", "Value": "taggable"}])
    kms.enable_key(KeyId=key)
    assert sm.get_secret_value(SecretId=unique_name)["SecretString"] == "second value"
    # A KmsKeyId that names no usable key is refused, and nothing is written.
    for bad in (str(uuid.uuid4()), kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]):
        with pytest.raises(ClientError) as e:
            sm.create_secret(Name=unique_name + "-bad", SecretString="x", KmsKeyId=bad)
        assert error(e)[0] == "EncryptionFailure" and bad in error(e)[1]
        with pytest.raises(ClientError):
            sm.describe_secret(SecretId=unique_name + "-bad")
    # Moving the secret to another key (or back to the default) re-wraps; values stay.
    other = kms.create_key()["KeyMetadata"]["KeyId"]
    sm.update_secret(SecretId=unique_name, KmsKeyId=other)
    kms.disable_key(KeyId=key)
    assert sm.get_secret_value(SecretId=unique_name)["SecretString"] == "second value"
    sm.update_secret(SecretId=unique_name, KmsKeyId="alias/aws/secretsmanager")
    kms.disable_key(KeyId=other)
    assert sm.get_secret_value(SecretId=unique_name)["SecretString"] == "second value"


def test_key_operations_are_audited_without_their_data(kms, server):
    meta = kms.create_key()["KeyMetadata"]
    marker = f"audited-plaintext-{uuid.uuid4().hex}".encode()
    blob = kms.encrypt(KeyId=meta["KeyId"], Plaintext=marker)["CiphertextBlob"]
    with pytest.raises(ClientError):
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"wrong": "context"})
    status, out = awsraw.call(server, "baton.ListAuditEntries", {"AfterSeq": -200, "MaxResults": 1000})
    assert status == 200, out
    mine = [e for e in out["Entries"] if meta["Arn"] in e["Resource"]]
    by_action = {e["Action"]: e for e in mine}
    assert by_action["kms:Encrypt"]["Decision"] == "allow" and by_action["kms:Encrypt"]["Outcome"] == "ok"
    assert by_action["kms:Decrypt"]["Outcome"] == "InvalidCiphertextException"
    text = json.dumps(out)
    assert marker.decode() not in text and base64.b64encode(marker).decode() not in text
    assert base64.b64encode(blob).decode() not in text
