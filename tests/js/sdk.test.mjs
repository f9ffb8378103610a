// The AWS SDK for JavaScript v3 against a running `baton serve`, through the calls that
// Terraform's aws_secretsmanager_* and aws_kms_* resources and ordinary applications make.
// tests/aws/test_js_sdk.py starts the server and runs this with `node --test`; it passes the
// endpoint, the credentials and a unique name prefix in the environment.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  CancelRotateSecretCommand,
  CreateSecretCommand,
  DeleteResourcePolicyCommand,
  DeleteSecretCommand,
  DescribeSecretCommand,
  GetResourcePolicyCommand,
  GetSecretValueCommand,
  ListSecretVersionIdsCommand,
  PutResourcePolicyCommand,
  PutSecretValueCommand,
  ResourceNotFoundException,
  RestoreSecretCommand,
  RotateSecretCommand,
  SecretsManagerClient,
  TagResourceCommand,
  UntagResourceCommand,
  UpdateSecretVersionStageCommand,
  paginateListSecrets,
} from "@aws-sdk/client-secrets-manager";
import {
  CreateAliasCommand,
  CreateGrantCommand,
  CreateKeyCommand,
  DecryptCommand,
  DescribeKeyCommand,
  EnableKeyRotationCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  GetKeyRotationStatusCommand,
  GetPublicKeyCommand,
  InvalidCiphertextException,
  KMSClient,
  ListGrantsCommand,
  RevokeGrantCommand,
  RotateKeyOnDemandCommand,
  ScheduleKeyDeletionCommand,
  SignCommand,
  UpdateKeyDescriptionCommand,
  VerifyCommand,
  paginateListAliases,
} from "@aws-sdk/client-kms";
import { createPublicKey, createVerify } from "node:crypto";

const config = {
  endpoint: process.env.BATON_ENDPOINT,
  region: process.env.AWS_REGION,
  credentials: {
    accessKeyId: process.env.AWS_ACCESS_KEY_ID,
    secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY,
  },
  maxAttempts: 1,
};
const prefix = process.env.BATON_TEST_PREFIX;
const account = process.env.BATON_ACCOUNT_ID;
const sm = new SecretsManagerClient(config);
const kms = new KMSClient(config);

test("a secret's lifecycle", async () => {
  const name = `${prefix}/db`;
  const created = await sm.send(new CreateSecretCommand({
    Name: name,
    SecretString: '{"username":"app","password":"first-js-value"}',
    Description: "made by the JavaScript SDK",
    Tags: [{ Key: "team", Value: "payments" }],
    ClientRequestToken: "11111111-1111-4111-8111-111111111111",
  }));
  assert.match(created.ARN, new RegExp(`^arn:aws:secretsmanager:${config.region}:${account}:secret:`));
  assert.equal(created.VersionId, "11111111-1111-4111-8111-111111111111");
  // A retry with the same token and value is ignored, as AWS documents: the same answer.
  const again = await sm.send(new CreateSecretCommand({
    Name: name,
    SecretString: '{"username":"app","password":"first-js-value"}',
    ClientRequestToken: "11111111-1111-4111-8111-111111111111",
  }));
  assert.equal(again.ARN, created.ARN);
  assert.equal(again.VersionId, created.VersionId);
  const taken = await sm.send(new CreateSecretCommand({ Name: name, SecretString: "another-js-value" }))
    .catch((e) => e);
  assert.equal(taken.name, "ResourceExistsException");

  const put = await sm.send(new PutSecretValueCommand({
    SecretId: name, SecretString: '{"username":"app","password":"second-js-value"}',
  }));
  const current = await sm.send(new GetSecretValueCommand({ SecretId: name }));
  assert.equal(current.VersionId, put.VersionId);
  assert.deepEqual(current.VersionStages, ["AWSCURRENT"]);
  assert.equal(JSON.parse(current.SecretString).password, "second-js-value");
  assert.ok(current.CreatedDate instanceof Date);
  const previous = await sm.send(new GetSecretValueCommand({ SecretId: name, VersionStage: "AWSPREVIOUS" }));
  assert.equal(previous.VersionId, created.VersionId);

  await sm.send(new UpdateSecretVersionStageCommand({
    SecretId: name, VersionStage: "blue", MoveToVersionId: created.VersionId,
  }));
  const versions = await sm.send(new ListSecretVersionIdsCommand({ SecretId: name }));
  const stages = Object.fromEntries(versions.Versions.map((v) => [v.VersionId, [...v.VersionStages].sort()]));
  assert.deepEqual(stages[created.VersionId], ["AWSPREVIOUS", "blue"]);

  await sm.send(new TagResourceCommand({ SecretId: name, Tags: [{ Key: "env", Value: "prod" }] }));
  await sm.send(new UntagResourceCommand({ SecretId: name, TagKeys: ["team"] }));
  const described = await sm.send(new DescribeSecretCommand({ SecretId: name }));
  assert.equal(described.Description, "made by the JavaScript SDK");
  assert.deepEqual(described.Tags, [{ Key: "env", Value: "prod" }]);
  assert.ok(described.LastChangedDate instanceof Date);

  const names = [];
  for await (const page of paginateListSecrets({ client: sm, pageSize: 1 }, {
    Filters: [{ Key: "name", Values: [prefix] }],
  })) {
    names.push(...page.SecretList.map((s) => s.Name));
  }
  assert.ok(names.includes(name), `the paginator found ${name} among ${names}`);

  const deleted = await sm.send(new DeleteSecretCommand({ SecretId: name, RecoveryWindowInDays: 7 }));
  assert.ok(deleted.DeletionDate.getTime() - Date.now() > 6.9 * 86400e3);
  const gone = await sm.send(new GetSecretValueCommand({ SecretId: name })).catch((e) => e);
  assert.equal(gone.name, "InvalidRequestException");
  await sm.send(new RestoreSecretCommand({ SecretId: name }));
  await sm.send(new DeleteSecretCommand({ SecretId: name, ForceDeleteWithoutRecovery: true }));
  const missing = await sm.send(new DescribeSecretCommand({ SecretId: name })).catch((e) => e);
  assert.ok(missing instanceof ResourceNotFoundException, `${missing}`);
  assert.equal(missing.$metadata.httpStatusCode, 400);
});

test("rotation configuration and a resource policy", async () => {
  const name = `${prefix}/rotated`;
  const { ARN } = await sm.send(new CreateSecretCommand({ Name: name, SecretString: "v0-js-value" }));
  await sm.send(new RotateSecretCommand({
    SecretId: name,
    RotationLambdaARN: `arn:aws:lambda:${config.region}:${account}:function:baton-random`,
    RotationRules: { AutomaticallyAfterDays: 30 },
    RotateImmediately: false,
  }));
  let described = await sm.send(new DescribeSecretCommand({ SecretId: name }));
  assert.equal(described.RotationEnabled, true);
  assert.equal(described.RotationRules.AutomaticallyAfterDays, 30);
  assert.ok(described.NextRotationDate.getTime() - Date.now() > 29 * 86400e3);
  await sm.send(new CancelRotateSecretCommand({ SecretId: name }));
  described = await sm.send(new DescribeSecretCommand({ SecretId: name }));
  assert.equal(described.RotationEnabled, false);

  const policy = JSON.stringify({
    Version: "2012-10-17",
    Statement: [{
      Effect: "Allow",
      Principal: { AWS: `arn:aws:iam::${account}:root` },
      Action: "secretsmanager:GetSecretValue",
      Resource: "*",
    }],
  });
  await sm.send(new PutResourcePolicyCommand({ SecretId: name, ResourcePolicy: policy, BlockPublicPolicy: true }));
  const got = await sm.send(new GetResourcePolicyCommand({ SecretId: name }));
  assert.equal(got.ARN, ARN);
  assert.deepEqual(JSON.parse(got.ResourcePolicy), JSON.parse(policy));
  await sm.send(new DeleteResourcePolicyCommand({ SecretId: name }));
  assert.equal((await sm.send(new GetResourcePolicyCommand({ SecretId: name }))).ResourcePolicy, undefined);
});

test("KMS: encrypt, decrypt, data keys and grants through a rotation", async () => {
  const { KeyMetadata } = await kms.send(new CreateKeyCommand({ Description: "js key" }));
  assert.equal(KeyMetadata.KeySpec, "SYMMETRIC_DEFAULT");
  const alias = `alias/${prefix.replaceAll("/", "-")}`;
  await kms.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: KeyMetadata.KeyId }));
  await kms.send(new UpdateKeyDescriptionCommand({ KeyId: alias, Description: "js key, renamed" }));
  const key = (await kms.send(new DescribeKeyCommand({ KeyId: alias }))).KeyMetadata;
  assert.equal(key.Arn, KeyMetadata.Arn);
  assert.equal(key.Description, "js key, renamed");
  const aliases = [];
  for await (const page of paginateListAliases({ client: kms, pageSize: 2 }, { KeyId: KeyMetadata.KeyId })) {
    aliases.push(...page.Aliases.map((a) => a.AliasName));
  }
  assert.deepEqual(aliases, [alias]);

  const context = { tenant: "t-1" };
  const plaintext = new TextEncoder().encode("js plaintext");
  const sealed = await kms.send(new EncryptCommand({ KeyId: alias, Plaintext: plaintext, EncryptionContext: context }));
  assert.equal(sealed.KeyId, KeyMetadata.Arn);
  const data = await kms.send(new GenerateDataKeyCommand({ KeyId: alias, KeySpec: "AES_256" }));
  assert.equal(data.Plaintext.length, 32);

  await kms.send(new EnableKeyRotationCommand({ KeyId: KeyMetadata.KeyId, RotationPeriodInDays: 90 }));
  assert.equal((await kms.send(new GetKeyRotationStatusCommand({ KeyId: KeyMetadata.KeyId }))).KeyRotationEnabled, true);
  await kms.send(new RotateKeyOnDemandCommand({ KeyId: KeyMetadata.KeyId }));
  await kms.send(new RotateKeyOnDemandCommand({ KeyId: KeyMetadata.KeyId }));

  const opened = await kms.send(new DecryptCommand({ CiphertextBlob: sealed.CiphertextBlob, EncryptionContext: context }));
  assert.deepEqual(Buffer.from(opened.Plaintext), Buffer.from(plaintext));
  const key2 = await kms.send(new DecryptCommand({ CiphertextBlob: data.CiphertextBlob }));
  assert.deepEqual(Buffer.from(key2.Plaintext), Buffer.from(data.Plaintext));
  const wrong = await kms.send(new DecryptCommand({
    CiphertextBlob: sealed.CiphertextBlob, EncryptionContext: { tenant: "t-2" },
  })).catch((e) => e);
  assert.ok(wrong instanceof InvalidCiphertextException, `${wrong}`);

  // What Terraform's aws_kms_grant calls.
  const grantee = `arn:aws:iam::${account}:role/js-app`;
  const grant = await kms.send(new CreateGrantCommand({
    KeyId: KeyMetadata.KeyId, GranteePrincipal: grantee, Operations: ["Decrypt", "GenerateDataKey"],
    Name: "js-grant", Constraints: { EncryptionContextSubset: { tenant: "t-1" } },
  }));
  assert.equal(grant.GrantId.length, 64);
  const { Grants } = await kms.send(new ListGrantsCommand({ KeyId: KeyMetadata.KeyId }));
  assert.deepEqual(Grants.map((g) => [g.GrantId, g.Name, g.GranteePrincipal]), [[grant.GrantId, "js-grant", grantee]]);
  assert.deepEqual(Grants[0].Constraints.EncryptionContextSubset, { tenant: "t-1" });
  await kms.send(new RevokeGrantCommand({ KeyId: KeyMetadata.KeyId, GrantId: grant.GrantId }));
  assert.deepEqual((await kms.send(new ListGrantsCommand({ KeyId: KeyMetadata.KeyId }))).Grants, []);

  const deletion = await kms.send(new ScheduleKeyDeletionCommand({ KeyId: KeyMetadata.KeyId, PendingWindowInDays: 7 }));
  assert.equal(deletion.KeyState, "PendingDeletion");
});

test("KMS: a signature verifies in Node's own crypto", async () => {
  const { KeyMetadata } = await kms.send(new CreateKeyCommand({ KeySpec: "ECC_NIST_P256", KeyUsage: "SIGN_VERIFY" }));
  const message = new TextEncoder().encode("signed by baton");
  const { Signature, SigningAlgorithm } = await kms.send(new SignCommand({
    KeyId: KeyMetadata.KeyId, Message: message, SigningAlgorithm: "ECDSA_SHA_256",
  }));
  assert.equal(SigningAlgorithm, "ECDSA_SHA_256");
  const { SignatureValid } = await kms.send(new VerifyCommand({
    KeyId: KeyMetadata.KeyId, Message: message, Signature, SigningAlgorithm: "ECDSA_SHA_256",
  }));
  assert.equal(SignatureValid, true);
  const { PublicKey } = await kms.send(new GetPublicKeyCommand({ KeyId: KeyMetadata.KeyId }));
  const publicKey = createPublicKey({ key: Buffer.from(PublicKey), format: "der", type: "spki" });
  const verifier = createVerify("SHA256");
  verifier.update(message);
  assert.equal(verifier.verify(publicKey, Buffer.from(Signature)), true);
});
