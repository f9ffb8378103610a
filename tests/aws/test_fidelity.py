"""Secrets Manager behaviour that tools written against AWS rely on, each as the AWS API
reference and user guide document it: ListSecrets filters, a forced delete of a secret that
does not exist, and which members DescribeSecret leaves out."""

import random
import string

import pytest
from botocore.exceptions import ClientError


def names(sm, key, *values):
    listed = sm.list_secrets(Filters=[{"Key": key, "Values": list(values)}], MaxResults=100)["SecretList"]
    return sorted(s["Name"] for s in listed)


@pytest.fixture
def described_secrets(sm):
    """Secrets whose descriptions, names and tags exercise word splitting. The names start with
    one random lower-case word, which no search value below can match."""
    base = "fid" + "".join(random.choices(string.ascii_lowercase, k=10))
    made = {
        "a": sm.create_secret(Name=f"{base}-credsDatabase892", SecretString="x",
                              Description="Description of my secret",
                              Tags=[{"Key": "teamOwner", "Value": "payments-EU"}])["Name"],
        "b": sm.create_secret(Name=f"{base}-other", SecretString="x", Description="my basic description")["Name"],
        "c": sm.create_secret(Name=f"{base}-third", SecretString="x", Description="Unrelated text")["Name"],
    }
    return base, made


def test_the_description_filter_matches_every_word_in_any_order_not_case_sensitive(sm, described_secrets):
    base, made = described_secrets
    mine = lambda found: [n for n in found if n.startswith(base)]  # noqa: E731
    # AWS's example: "My Description" matches "Description of my secret" and "my basic description".
    assert mine(names(sm, "description", "My Description")) == sorted([made["a"], made["b"]])
    assert mine(names(sm, "description", "secret OF")) == [made["a"]]
    assert mine(names(sm, "description", "descr")) == sorted([made["a"], made["b"]]), "words match by prefix"
    assert mine(names(sm, "description", "my unrelated")) == [], "every word must match"
    assert mine(names(sm, "description", "!my")) == [made["c"]]


def test_the_all_filter_splits_values_and_attributes_into_words(sm, described_secrets):
    base, made = described_secrets
    mine = lambda found: [n for n in found if n.startswith(base)]  # noqa: E731
    # Lower-to-upper case changes and letter/digit changes split words: credsDatabase892 holds
    # "creds", "database" and "892".
    assert mine(names(sm, "all", "database")) == [made["a"]]
    assert mine(names(sm, "all", "892")) == [made["a"]]
    assert mine(names(sm, "all", "OWNER")) == [made["a"]], "tag keys, split at the case change"
    assert mine(names(sm, "all", "eu")) == [made["a"]], "tag values, split at punctuation"
    assert mine(names(sm, "all", "Data#89")) == [made["a"]], "the value is split too"
    assert mine(names(sm, "all", "unrel")) == [made["c"]], "descriptions, by word prefix"
    assert mine(names(sm, "all", "atabase")) == [], "a word's middle does not match"


def test_the_primary_region_filter_matches_only_replicated_secrets(server, sm, unique_name):
    sm.create_secret(Name=unique_name + "-alone", SecretString="x")
    sm.create_secret(Name=unique_name + "-replicated", SecretString="x",
                     AddReplicaRegions=[{"Region": "eu-west-1"}])
    found = [n for n in names(sm, "primary-region", "us-east-1") if n.startswith(unique_name)]
    assert found == [unique_name + "-replicated"]
    west = server.client(region="eu-west-1")
    found = [s["Name"] for s in west.list_secrets(Filters=[{"Key": "primary-region", "Values": ["us-"]}])["SecretList"]]
    assert unique_name + "-replicated" in found, "the replica's primary region"
    described = sm.describe_secret(SecretId=unique_name + "-alone")
    assert "PrimaryRegion" not in described
    assert sm.describe_secret(SecretId=unique_name + "-replicated")["PrimaryRegion"] == "us-east-1"
    sm.remove_regions_from_replication(SecretId=unique_name + "-replicated", RemoveReplicaRegions=["eu-west-1"])


def test_a_forced_delete_of_a_secret_that_does_not_exist_succeeds(server, sm, unique_name):
    r = sm.delete_secret(SecretId=unique_name + "-never-created", ForceDeleteWithoutRecovery=True)
    assert r["Name"] == unique_name + "-never-created"
    assert r["ARN"] == f"arn:aws:secretsmanager:us-east-1:{server.account_id}:secret:{unique_name}-never-created"
    assert "DeletionDate" in r
    # Twice in a row, as a teardown retried: both succeed.
    arn = sm.create_secret(Name=unique_name, SecretString="x")["ARN"]
    first = sm.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    again = sm.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    assert first["ARN"] == again["ARN"] == arn and again["Name"] == unique_name
    # Without ForceDeleteWithoutRecovery a missing secret is still ResourceNotFoundException.
    with pytest.raises(ClientError) as e:
        sm.delete_secret(SecretId=unique_name + "-never-created")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_describe_leaves_out_what_a_secret_does_not_have(server, sm, unique_name):
    sm.create_secret(Name=unique_name, Description="no value yet")
    d = sm.describe_secret(SecretId=unique_name)
    for member in ("VersionIdsToStages", "RotationEnabled", "PrimaryRegion", "Tags", "RotationLambdaARN"):
        assert member not in d, member
    listed = sm.list_secrets(Filters=[{"Key": "name", "Values": [unique_name]}])["SecretList"][0]
    for member in ("SecretVersionsToStages", "RotationEnabled", "PrimaryRegion", "Tags"):
        assert member not in listed, member
    sm.put_secret_value(SecretId=unique_name, SecretString="v1")
    assert list(sm.describe_secret(SecretId=unique_name)["VersionIdsToStages"].values()) == [["AWSCURRENT"]]
    # Rotation configured, then turned off: RotationEnabled stays, false.
    lam = f"arn:aws:lambda:us-east-1:{server.account_id}:function:baton-random"
    sm.rotate_secret(SecretId=unique_name, RotationLambdaARN=lam, RotateImmediately=False,
                     RotationRules={"AutomaticallyAfterDays": 30})
    assert sm.describe_secret(SecretId=unique_name)["RotationEnabled"] is True
    sm.cancel_rotate_secret(SecretId=unique_name)
    assert sm.describe_secret(SecretId=unique_name)["RotationEnabled"] is False


def test_tags_are_an_empty_list_once_every_tag_is_removed(sm, unique_name):
    """AWS leaves Tags out for a secret that was never tagged and answers [] after
    UntagResource removes the last tag, in DescribeSecret and ListSecrets alike."""
    sm.create_secret(Name=unique_name, SecretString="v")
    assert "Tags" not in sm.describe_secret(SecretId=unique_name)
    sm.tag_resource(SecretId=unique_name, Tags=[{"Key": "team", "Value": "a"}, {"Key": "env", "Value": "b"}])
    sm.untag_resource(SecretId=unique_name, TagKeys=["team", "env"])
    assert sm.describe_secret(SecretId=unique_name)["Tags"] == []
    listed = sm.list_secrets(Filters=[{"Key": "name", "Values": [unique_name]}])["SecretList"]
    assert [s.get("Tags") for s in listed] == [[]]
    # A value written afterwards keeps it so (the flag is the secret's, not the request's).
    sm.put_secret_value(SecretId=unique_name, SecretString="v2")
    assert sm.describe_secret(SecretId=unique_name)["Tags"] == []
    created_tagged = unique_name + "-2"
    sm.create_secret(Name=created_tagged, SecretString="v", Tags=[{"Key": "k", "Value": "v"}])
    sm.untag_resource(SecretId=created_tagged, TagKeys=["k"])
    assert sm.describe_secret(SecretId=created_tagged)["Tags"] == []


def test_update_key_description_changes_only_the_description(server):
    kms = server.client("kms")
    key = kms.create_key(Description="first")["KeyMetadata"]["KeyId"]
    kms.update_key_description(KeyId=key, Description="second")
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["Description"] == "second"
    kms.update_key_description(KeyId=key, Description="")
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["Description"] == ""
    with pytest.raises(ClientError) as e:
        kms.update_key_description(KeyId="00000000-0000-0000-0000-000000000000", Description="x")
    assert e.value.response["Error"]["Code"] == "NotFoundException"
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    with pytest.raises(ClientError) as e:
        kms.update_key_description(KeyId=key, Description="too late")
    assert e.value.response["Error"]["Code"] == "KMSInvalidStateException"


@pytest.mark.parametrize("spec,algorithm,curve,digest", [
    ("ECC_NIST_P521", "ECDSA_SHA_512", "secp521r1", "SHA512"),
    ("ECC_SECG_P256K1", "ECDSA_SHA_256", "secp256k1", "SHA256"),
])
def test_p521_and_secp256k1_keys_sign_and_their_public_keys_verify_outside_baton(server, spec, algorithm, curve,
                                                                                 digest):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    kms = server.client("kms")
    meta = kms.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    assert meta["KeySpec"] == spec and meta["SigningAlgorithms"] == [algorithm]
    key = meta["KeyId"]
    signature = kms.sign(KeyId=key, Message=b"transfer 1 ETH", SigningAlgorithm=algorithm)["Signature"]
    assert kms.verify(KeyId=key, Message=b"transfer 1 ETH", Signature=signature,
                      SigningAlgorithm=algorithm)["SignatureValid"] is True
    with pytest.raises(ClientError) as e:
        kms.verify(KeyId=key, Message=b"transfer 2 ETH", Signature=signature, SigningAlgorithm=algorithm)
    assert e.value.response["Error"]["Code"] == "KMSInvalidSignatureException"
    public = serialization.load_der_public_key(kms.get_public_key(KeyId=key)["PublicKey"])
    assert public.curve.name == curve
    public.verify(signature, b"transfer 1 ETH", ec.ECDSA(getattr(hashes, digest)()))
    pair = kms.generate_data_key_pair(KeyId=kms.create_key()["KeyMetadata"]["KeyId"], KeyPairSpec=spec)
    assert serialization.load_der_public_key(pair["PublicKey"]).curve.name == curve


def test_the_aws_managed_secrets_manager_key_is_made_on_first_use(server, unique_name):
    """AWS makes alias/aws/secretsmanager's key the first time it is needed; DescribeKey of the
    alias (Terraform's `data "aws_kms_alias"`) answers with it, KeyManager AWS. Until then
    ListAliases lists the predefined alias without a TargetKeyId. Nobody can change or use the
    key directly; the account may describe, get and list it."""
    region = "eu-west-1"  # a namespace no other test makes the key in
    kms = server.client("kms", region=region)
    before = {a["AliasName"]: a for a in kms.list_aliases()["Aliases"]}
    assert "alias/aws/secretsmanager" in before and "TargetKeyId" not in before["alias/aws/secretsmanager"]

    meta = kms.describe_key(KeyId="alias/aws/secretsmanager")["KeyMetadata"]
    assert meta["KeyManager"] == "AWS" and meta["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert meta["KeyState"] == "Enabled" and meta["Arn"].startswith(f"arn:aws:kms:{region}:{server.account_id}:key/")
    assert meta["Description"] == "Default key that protects my Secrets Manager data when no other key is defined"
    assert kms.describe_key(KeyId="alias/aws/secretsmanager")["KeyMetadata"]["KeyId"] == meta["KeyId"], \
        "made once"
    after = {a["AliasName"]: a for a in kms.list_aliases()["Aliases"]}
    assert after["alias/aws/secretsmanager"]["TargetKeyId"] == meta["KeyId"]
    assert meta["KeyId"] in {k["KeyId"] for k in kms.list_keys(Limit=1000)["Keys"]}
    assert kms.get_key_rotation_status(KeyId=meta["KeyId"])["KeyRotationEnabled"] is True
    assert "kms:Describe*" in kms.get_key_policy(KeyId=meta["KeyId"], PolicyName="default")["Policy"]

    for call in (lambda: kms.disable_key(KeyId=meta["KeyId"]),
                 lambda: kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7),
                 lambda: kms.update_key_description(KeyId=meta["KeyId"], Description="mine"),
                 lambda: kms.tag_resource(KeyId=meta["KeyId"], Tags=[{"TagKey": "a", "TagValue": "b"}]),
                 lambda: kms.rotate_key_on_demand(KeyId=meta["KeyId"]),
                 lambda: kms.encrypt(KeyId="alias/aws/secretsmanager", Plaintext=b"direct use"),
                 lambda: kms.create_alias(AliasName="alias/" + unique_name.replace("/", "-")[:100],
                                          TargetKeyId=meta["KeyId"])):
        with pytest.raises(ClientError) as e:
            call()
        assert e.value.response["Error"]["Code"] == "AccessDeniedException"
        assert "AWS managed key" in e.value.response["Error"]["Message"]
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"

    # Secrets Manager uses it: a secret whose KmsKeyId is the key's ARN reads back.
    sm = server.client(region=region)
    sm.create_secret(Name=unique_name, SecretString="under-the-managed-key", KmsKeyId=meta["Arn"])
    assert sm.get_secret_value(SecretId=unique_name)["SecretString"] == "under-the-managed-key"

    # Only the aliases of AWS managed keys Baton makes exist; another alias/aws/ name is unknown.
    with pytest.raises(ClientError) as e:
        kms.describe_key(KeyId="alias/aws/lambda")
    assert e.value.response["Error"]["Code"] == "NotFoundException"
