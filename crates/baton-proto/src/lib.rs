//! Wire types of the AWS JSON 1.1 protocol for Secrets Manager, and of Baton's own operations
//! (target prefix `baton.`). This crate holds the only serde types that cross the network.
//!
//! Request types ignore unknown members, so an SDK newer than this server still works; all
//! fields are optional at this layer and required ones are checked by the server, which can then
//! name the missing field in an AWS-shaped error.
//!
//! Timestamps are seconds since the Unix epoch as JSON numbers, as the AWS JSON protocol sends
//! them. Binary values are base64 strings.

use serde::{Deserialize, Serialize};

/// The target prefix of AWS Secrets Manager operations.
pub const SECRETS_MANAGER_TARGET_PREFIX: &str = "secretsmanager.";
/// The target prefix of Baton's own operations.
pub const BATON_TARGET_PREFIX: &str = "baton.";
/// The content type of every request and response.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// An AWS error body. Service errors use `Message`; errors of the request front end
/// (authentication, serialization) use `message`, as AWS does. Clients accept either.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    #[serde(rename = "__type")]
    pub error_type: String,
    #[serde(rename = "Message", alias = "message")]
    pub message: String,
}

macro_rules! wire {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
        #[serde(rename_all = "PascalCase")]
        pub struct $name {
            $(
                $(#[$fmeta])*
                #[serde(default, skip_serializing_if = "crate::is_default")]
                pub $field: $ty,
            )*
        }

        impl std::fmt::Debug for $name {
            #[allow(unused_mut)]
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut s = f.debug_struct(stringify!($name));
                $(
                    if SENSITIVE_FIELDS.contains(&stringify!($field)) {
                        s.field(stringify!($field), &"[REDACTED]");
                    } else {
                        s.field(stringify!($field), &self.$field);
                    }
                )*
                s.finish()
            }
        }
    };
}

/// Fields whose values are secret: their `Debug` output is redacted whatever the type.
const SENSITIVE_FIELDS: &[&str] = &[
    "secret_string",
    "secret_binary",
    "random_password",
    "secret_access_key",
    "signing_secret",
    "session_token",
    "plaintext",
];

pub(crate) fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

pub mod kms;

wire!(Tag { key: Option<String>, value: Option<String> });

wire!(ReplicaRegion { region: Option<String>, kms_key_id: Option<String> });

wire!(ReplicationStatus {
    region: Option<String>,
    kms_key_id: Option<String>,
    status: Option<String>,
    status_message: Option<String>,
    last_accessed_date: Option<f64>,
});

wire!(RotationRules {
    automatically_after_days: Option<i64>,
    duration: Option<String>,
    schedule_expression: Option<String>,
});

wire!(Filter { key: Option<String>, values: Option<Vec<String>> });

wire!(CreateSecretRequest {
    name: Option<String>,
    client_request_token: Option<String>,
    description: Option<String>,
    kms_key_id: Option<String>,
    secret_binary: Option<String>,
    secret_string: Option<String>,
    tags: Option<Vec<Tag>>,
    add_replica_regions: Option<Vec<ReplicaRegion>>,
    force_overwrite_replica_secret: Option<bool>,
});

wire!(CreateSecretResponse {
    #[serde(rename = "ARN")]
    arn: Option<String>,
    name: Option<String>,
    version_id: Option<String>,
    replication_status: Option<Vec<ReplicationStatus>>,
});

wire!(SecretIdRequest {
    secret_id: Option<String>,
    /// Baton's extension for DescribeRotation: a KMS key (id, ARN or alias) instead of a secret.
    key_id: Option<String>,
});

wire!(ArnNameResponse {
    #[serde(rename = "ARN")]
    arn: Option<String>,
    name: Option<String>,
});

wire!(DescribeSecretResponse {
    #[serde(rename = "ARN")]
    arn: Option<String>,
    name: Option<String>,
    description: Option<String>,
    kms_key_id: Option<String>,
    rotation_enabled: Option<bool>,
    #[serde(rename = "RotationLambdaARN")]
    rotation_lambda_arn: Option<String>,
    rotation_rules: Option<RotationRules>,
    last_rotated_date: Option<f64>,
    last_changed_date: Option<f64>,
    last_accessed_date: Option<f64>,
    deleted_date: Option<f64>,
    next_rotation_date: Option<f64>,
    tags: Option<Vec<Tag>>,
    version_ids_to_stages: Option<std::collections::BTreeMap<String, Vec<String>>>,
    owning_service: Option<String>,
    created_date: Option<f64>,
    primary_region: Option<String>,
    replication_status: Option<Vec<ReplicationStatus>>,
});

wire!(GetSecretValueRequest {
    secret_id: Option<String>,
    version_id: Option<String>,
    version_stage: Option<String>,
});

wire!(SecretValue {
    #[serde(rename = "ARN")]
    arn: Option<String>,
    name: Option<String>,
    version_id: Option<String>,
    secret_binary: Option<String>,
    secret_string: Option<String>,
    version_stages: Option<Vec<String>>,
    created_date: Option<f64>,
});

wire!(BatchGetSecretValueRequest {
    secret_id_list: Option<Vec<String>>,
    filters: Option<Vec<Filter>>,
    max_results: Option<i64>,
    next_token: Option<String>,
});

wire!(ApiErrorEntry {
    secret_id: Option<String>,
    error_code: Option<String>,
    message: Option<String>,
});

wire!(BatchGetSecretValueResponse {
    secret_values: Option<Vec<SecretValue>>,
    next_token: Option<String>,
    errors: Option<Vec<ApiErrorEntry>>,
});

wire!(PutSecretValueRequest {
    secret_id: Option<String>,
    client_request_token: Option<String>,
    secret_binary: Option<String>,
    secret_string: Option<String>,
    version_stages: Option<Vec<String>>,
    rotation_token: Option<String>,
});

wire!(PutSecretValueResponse {
    #[serde(rename = "ARN")]
    arn: Option<String>,
    name: Option<String>,
    version_id: Option<String>,
    version_stages: Option<Vec<String>>,
});

wire!(UpdateSecretRequest {
    secret_id: Option<String>,
    client_request_token: Option<String>,
    description: Option<String>,
    kms_key_id: Option<String>,
    secret_binary: Option<String>,
    secret_string: Option<String>,
});

wire!(ArnNameVersionResponse {
    #[serde(rename = "ARN")]
    arn: Option<String>,
    name: Option<String>,
    version_id: Option<String>,
});

wire!(UpdateSecretVersionStageRequest {
    secret_id: Option<String>,
    version_stage: Option<String>,
    remove_from_version_id: Option<String>,
    move_to_version_id: Option<String>,
});

wire!(StageMove {
    version_stage: Option<String>,
    remove_from_version_id: Option<String>,
    move_to_version_id: Option<String>,
});

wire!(
    /// Baton's atomic multi-label move: `baton.UpdateSecretVersionStages`.
    UpdateSecretVersionStagesRequest {
        secret_id: Option<String>,
        moves: Option<Vec<StageMove>>,
    }
);

wire!(UpdateSecretVersionStagesResponse {
    #[serde(rename = "ARN")]
    arn: Option<String>,
    name: Option<String>,
    version_ids_to_stages: Option<std::collections::BTreeMap<String, Vec<String>>>,
});

wire!(ListSecretsRequest {
    include_planned_deletion: Option<bool>,
    max_results: Option<i64>,
    next_token: Option<String>,
    filters: Option<Vec<Filter>>,
    sort_order: Option<String>,
    sort_by: Option<String>,
});

wire!(SecretListEntry {
    #[serde(rename = "ARN")]
    arn: Option<String>,
    name: Option<String>,
    description: Option<String>,
    kms_key_id: Option<String>,
    rotation_enabled: Option<bool>,
    #[serde(rename = "RotationLambdaARN")]
    rotation_lambda_arn: Option<String>,
    rotation_rules: Option<RotationRules>,
    last_rotated_date: Option<f64>,
    last_changed_date: Option<f64>,
    last_accessed_date: Option<f64>,
    deleted_date: Option<f64>,
    next_rotation_date: Option<f64>,
    tags: Option<Vec<Tag>>,
    secret_versions_to_stages: Option<std::collections::BTreeMap<String, Vec<String>>>,
    owning_service: Option<String>,
    created_date: Option<f64>,
    primary_region: Option<String>,
});

wire!(ListSecretsResponse {
    secret_list: Option<Vec<SecretListEntry>>,
    next_token: Option<String>,
});

wire!(ListSecretVersionIdsRequest {
    secret_id: Option<String>,
    max_results: Option<i64>,
    next_token: Option<String>,
    include_deprecated: Option<bool>,
});

wire!(SecretVersionsListEntry {
    version_id: Option<String>,
    version_stages: Option<Vec<String>>,
    last_accessed_date: Option<f64>,
    created_date: Option<f64>,
    kms_key_ids: Option<Vec<String>>,
});

wire!(ListSecretVersionIdsResponse {
    versions: Option<Vec<SecretVersionsListEntry>>,
    next_token: Option<String>,
    #[serde(rename = "ARN")]
    arn: Option<String>,
    name: Option<String>,
});

wire!(DeleteSecretRequest {
    secret_id: Option<String>,
    recovery_window_in_days: Option<i64>,
    force_delete_without_recovery: Option<bool>,
});

wire!(DeleteSecretResponse {
    #[serde(rename = "ARN")]
    arn: Option<String>,
    name: Option<String>,
    deletion_date: Option<f64>,
});

wire!(TagResourceRequest { secret_id: Option<String>, tags: Option<Vec<Tag>> });

wire!(UntagResourceRequest { secret_id: Option<String>, tag_keys: Option<Vec<String>> });

wire!(Empty {});

wire!(GetRandomPasswordRequest {
    password_length: Option<i64>,
    exclude_characters: Option<String>,
    exclude_numbers: Option<bool>,
    exclude_punctuation: Option<bool>,
    exclude_uppercase: Option<bool>,
    exclude_lowercase: Option<bool>,
    include_space: Option<bool>,
    require_each_included_type: Option<bool>,
});

wire!(GetRandomPasswordResponse { random_password: Option<String> });

wire!(PutResourcePolicyRequest {
    secret_id: Option<String>,
    resource_policy: Option<String>,
    block_public_policy: Option<bool>,
});

wire!(GetResourcePolicyResponse {
    #[serde(rename = "ARN")]
    arn: Option<String>,
    name: Option<String>,
    resource_policy: Option<String>,
});

wire!(ValidateResourcePolicyRequest {
    secret_id: Option<String>,
    resource_policy: Option<String>,
});

wire!(ValidationErrorsEntry { check_name: Option<String>, error_message: Option<String> });

wire!(ValidateResourcePolicyResponse {
    policy_validation_passed: Option<bool>,
    validation_errors: Option<Vec<ValidationErrorsEntry>>,
});

wire!(ReplicateSecretToRegionsRequest {
    secret_id: Option<String>,
    add_replica_regions: Option<Vec<ReplicaRegion>>,
    force_overwrite_replica_secret: Option<bool>,
});

wire!(RemoveRegionsFromReplicationRequest {
    secret_id: Option<String>,
    remove_replica_regions: Option<Vec<String>>,
});

wire!(ReplicationResponse {
    #[serde(rename = "ARN")]
    arn: Option<String>,
    replication_status: Option<Vec<ReplicationStatus>>,
});

wire!(StopReplicationToReplicaResponse {
    #[serde(rename = "ARN")]
    arn: Option<String>,
});

wire!(RotateSecretRequest {
    secret_id: Option<String>,
    client_request_token: Option<String>,
    #[serde(rename = "RotationLambdaARN")]
    rotation_lambda_arn: Option<String>,
    rotation_rules: Option<RotationRules>,
    rotate_immediately: Option<bool>,
});

wire!(AccessKey {
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    /// The principal the key acts as.
    principal_name: Option<String>,
    /// The same as `PrincipalName`, under the member name Baton used before principals.
    user_name: Option<String>,
    create_date: Option<f64>,
});

wire!(
    /// `baton.CreateAccessKey`. `UserName` is accepted as an older name of `PrincipalName`.
    CreateAccessKeyRequest {
        principal_name: Option<String>,
        user_name: Option<String>,
    }
);

wire!(CreateAccessKeyResponse { access_key: Option<AccessKey> });

wire!(ListAccessKeysRequest { principal_name: Option<String> });

wire!(ListAccessKeysResponse { access_keys: Option<Vec<AccessKey>> });

wire!(
    /// `baton.CreatePrincipal`: a user (a person) or a service. Both start with no rights.
    CreatePrincipalRequest {
        name: Option<String>,
        /// `user` (the default) or `service`.
        kind: Option<String>,
    }
);

wire!(Principal {
    name: Option<String>,
    kind: Option<String>,
    arn: Option<String>,
    create_date: Option<f64>,
    policy_names: Option<Vec<String>>,
});

wire!(CreatePrincipalResponse { principal: Option<Principal> });

wire!(ListPrincipalsResponse { principals: Option<Vec<Principal>> });

wire!(PrincipalNameRequest { principal_name: Option<String> });

wire!(
    /// What `baton.PutPrincipalPolicy` noticed: resources in another account or in a region
    /// this server does not serve, which the policy can never match here.
    PutPrincipalPolicyResponse {
        warnings: Option<Vec<String>>,
    }
);

wire!(PutPrincipalPolicyRequest {
    principal_name: Option<String>,
    policy_name: Option<String>,
    policy_document: Option<String>,
});

wire!(PrincipalPolicyRequest {
    principal_name: Option<String>,
    policy_name: Option<String>,
});

wire!(GetPrincipalPolicyResponse {
    principal_name: Option<String>,
    policy_name: Option<String>,
    policy_document: Option<String>,
});

wire!(
    /// `baton.GetSessionToken`: temporary credentials with the caller's own rights.
    GetSessionTokenRequest { duration_seconds: Option<i64> }
);

wire!(Credentials {
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    expiration: Option<f64>,
});

wire!(GetSessionTokenResponse { credentials: Option<Credentials> });

wire!(
    /// `baton.ListAuditEntries`: the audit log in `Seq` order, optionally filtered. Filters
    /// match exactly, except `Resource` and `Action`, which take `*` wildcards. With `Chain`,
    /// one chain in chain order: `AfterSeq` and `NextSeq` are then positions in it
    /// (`ChainSeq`). A chain commits in its own order, so a reader keeping a position in every
    /// chain never passes over an entry that commits late, as one following `Seq` can on
    /// several PostgreSQL nodes. `IncludeChains` adds every chain's end, read before the page.
    ListAuditEntriesRequest {
        after_seq: Option<i64>,
        chain: Option<String>,
        include_chains: Option<bool>,
        max_results: Option<i64>,
        principal: Option<String>,
        action: Option<String>,
        resource: Option<String>,
        decision: Option<String>,
        since: Option<f64>,
        until: Option<f64>,
    }
);

wire!(AuditEntry {
    seq: Option<i64>,
    time: Option<f64>,
    request_id: Option<String>,
    principal: Option<String>,
    access_key_id: Option<String>,
    action: Option<String>,
    resource: Option<String>,
    decision: Option<String>,
    outcome: Option<String>,
    status: Option<i64>,
    source_ip: Option<String>,
    reason: Option<String>,
    /// The client's `User-Agent`, or `baton-console`.
    user_agent: Option<String>,
    prev_hash: Option<String>,
    hash: Option<String>,
    /// The chain the entry belongs to: empty for the shared chain, else a node's own chain.
    chain: Option<String>,
    /// Its position in its chain.
    chain_seq: Option<i64>,
});

wire!(AuditChainEnd {
    /// Empty for the shared chain, else a node's own chain.
    chain: Option<String>,
    /// Its last position (0 before its first entry).
    last_seq: Option<i64>,
    /// In `baton.VerifyAuditLog`'s answer: the MAC there, in hex, as a backup names it.
    last_hash: Option<String>,
});

wire!(ListAuditEntriesResponse {
    entries: Option<Vec<AuditEntry>>,
    /// Pass as `AfterSeq` for the next page; absent at the end of the log (or of `Chain`).
    next_seq: Option<i64>,
    /// With `IncludeChains`: the shared chain first, then the node chains in the order they
    /// were registered.
    chains: Option<Vec<AuditChainEnd>>,
    /// How many entries this page read (matching or not).
    scanned: Option<i64>,
});

wire!(
    /// `baton.VerifyAuditLog`: checks the chains in order (the shared chain, then each node's
    /// chain in the order they were registered), from `AfterSeq` in `Chain` (default: the
    /// shared chain from its start).
    VerifyAuditLogRequest {
        after_seq: Option<i64>,
        max_results: Option<i64>,
        chain: Option<String>,
    }
);

wire!(AuditProblem {
    /// The position in its chain of the entry the problem is at.
    seq: Option<i64>,
    /// That entry's chain (empty for the shared chain).
    chain: Option<String>,
    problem: Option<String>,
});

wire!(VerifyAuditLogResponse {
    /// How many entries this call checked.
    checked: Option<i64>,
    /// Where the next call continues: pass `Chain` and `LastSeq` as `Chain` and `AfterSeq`.
    chain: Option<String>,
    /// The last position checked in `Chain`, and the hash there.
    last_seq: Option<i64>,
    last_hash: Option<String>,
    problems: Option<Vec<AuditProblem>>,
    /// Whether entries remain to check after `LastSeq` in `Chain` or in a later chain.
    more: Option<bool>,
    /// How many chains the log has (the shared one included).
    chains: Option<i64>,
    /// Each chain whose end this call reached, in the order checked, with its last position
    /// and the hash there.
    ends: Option<Vec<AuditChainEnd>>,
});

wire!(DeleteAccessKeyRequest { access_key_id: Option<String> });

wire!(
    /// `baton.PutRotationPolicy`: how rotations of a secret wait and retry.
    PutRotationPolicyRequest {
        secret_id: Option<String>,
        /// A KMS key (id, ARN or alias) instead of a secret.
        key_id: Option<String>,
        propagation_delay_seconds: Option<i64>,
        max_gate_wait_seconds: Option<i64>,
        retire_grace_seconds: Option<i64>,
        max_attempts: Option<i64>,
        blackout_windows: Option<Vec<String>>,
        /// Database rotators: end the old user's sessions once MaxGateWaitSeconds passed.
        kill_sessions_after_max_wait: Option<bool>,
    }
);

wire!(
    /// `baton.ResumeRotation`: retry a stopped rotation, or force a held gate open.
    ResumeRotationRequest {
        secret_id: Option<String>,
        force: Option<bool>,
    }
);

wire!(RotationSummary {
    version_id: Option<String>,
    old_version_id: Option<String>,
    phase: Option<String>,
    status: Option<String>,
    started_date: Option<f64>,
    timeline: Option<Vec<TimelineEntry>>,
});

wire!(ListRotationsRequest { secret_id: Option<String>, max_results: Option<i64> });

wire!(
    /// `baton.ListRotations`: a secret's rotations, newest first, with their timelines.
    ListRotationsResponse {
        #[serde(rename = "ARN")]
        arn: Option<String>,
        name: Option<String>,
        rotations: Option<Vec<RotationSummary>>,
    }
);

wire!(
    /// `baton.SummarizeSecrets`: up to 100 secrets by name or ARN.
    SummarizeSecretsRequest { secret_ids: Option<Vec<String>> }
);

wire!(
    /// One secret's rotation in flight (absent when none) and its live and lagging reporting
    /// consumers.
    SecretSummary {
        #[serde(rename = "ARN")]
        arn: Option<String>,
        name: Option<String>,
        rotation_phase: Option<String>,
        rotation_status: Option<String>,
        waiting_gate: Option<String>,
        consumers_live: Option<i64>,
        consumers_lagging: Option<i64>,
    }
);

wire!(SummarizeSecretsResponse {
    summaries: Option<Vec<SecretSummary>>,
    errors: Option<Vec<ApiErrorEntry>>,
});

wire!(
    /// `baton.ListOpenRotations`: the namespace's rotations in flight, and the rotations
    /// scheduled within `ScheduledWithinSeconds` (default one day).
    ListOpenRotationsRequest {
        scheduled_within_seconds: Option<i64>,
        max_results: Option<i64>,
    }
);

wire!(
    /// A rotation in flight: `Status` is `InProgress` or `Stopped`. While a gate waits,
    /// `HeldBy` names the live reporting consumers that do not yet hold what it needs, and
    /// `Alerted` says whether it has waited past its maximum.
    OpenRotation {
        #[serde(rename = "ARN")]
        arn: Option<String>,
        name: Option<String>,
        phase: Option<String>,
        status: Option<String>,
        status_reason: Option<String>,
        version_id: Option<String>,
        started_date: Option<f64>,
        waiting_gate: Option<String>,
        gate_reason: Option<String>,
        gate_waited_seconds: Option<f64>,
        alerted: Option<bool>,
        held_by: Option<Vec<ConsumerIdentity>>,
    }
);

wire!(ScheduledRotation {
    #[serde(rename = "ARN")]
    arn: Option<String>,
    name: Option<String>,
    next_rotation_date: Option<f64>,
});

wire!(ListOpenRotationsResponse {
    rotations: Option<Vec<OpenRotation>>,
    scheduled: Option<Vec<ScheduledRotation>>,
    /// Whether more rotations are in flight than `MaxResults`.
    truncated: Option<bool>,
});

wire!(
    /// An external rotator: exactly one of `Command` and `WebhookUrl`. `SigningSecret` is
    /// returned once, by `baton.CreateRotator` for a webhook. `Source` is `configuration` for
    /// an operator's command and `api` otherwise; `Runnable` is false for a command registered
    /// through the API before commands became the operator's, until the operator confirms it.
    /// `PolicyDocument` is the rotator's execution policy, added to its steps' temporary key.
    Rotator {
        name: Option<String>,
        command: Option<String>,
        webhook_url: Option<String>,
        timeout_seconds: Option<i64>,
        signing_secret: Option<String>,
        create_date: Option<f64>,
        source: Option<String>,
        runnable: Option<bool>,
        policy_document: Option<String>,
    }
);

wire!(ListRotatorsResponse { rotators: Option<Vec<Rotator>> });

wire!(RotatorNameRequest { name: Option<String> });

wire!(RotationPolicy {
    propagation_delay_seconds: Option<i64>,
    max_gate_wait_seconds: Option<i64>,
    retire_grace_seconds: Option<i64>,
    max_attempts: Option<i64>,
    blackout_windows: Option<Vec<String>>,
    kill_sessions_after_max_wait: Option<bool>,
});

wire!(TimelineEntry { date: Option<f64>, event: Option<String> });

wire!(
    /// `baton.DescribeRotation`: the rotation in flight (or the last one) and the policy.
    DescribeRotationResponse {
        #[serde(rename = "ARN")]
        arn: Option<String>,
        name: Option<String>,
        phase: Option<String>,
        status: Option<String>,
        status_reason: Option<String>,
        version_id: Option<String>,
        old_version_id: Option<String>,
        next_wake_date: Option<f64>,
        timeline: Option<Vec<TimelineEntry>>,
        policy: Option<RotationPolicy>,
        /// While a gate waits: which (`propagation` or `drain`), what it waits for, and how
        /// long it has waited, computed when asked.
        waiting_gate: Option<String>,
        gate_reason: Option<String>,
        gate_waited_seconds: Option<f64>,
    }
);

wire!(
    /// One version of a keyring: its id and its value.
    KeyringVersion {
        version_id: Option<String>,
        secret_string: Option<String>,
        secret_binary: Option<String>,
        version_stages: Option<Vec<String>>,
        created_date: Option<f64>,
    }
);

wire!(
    /// `baton.GetSecretKeyring`: the version to use, and every version to accept.
    /// `Revision` is what `baton.WatchSecrets` compares.
    GetSecretKeyringResponse {
        #[serde(rename = "ARN")]
        arn: Option<String>,
        name: Option<String>,
        current: Option<KeyringVersion>,
        accepted: Option<Vec<KeyringVersion>>,
        revision: Option<String>,
    }
);

wire!(
    /// Who a reporting consumer is: an application and one instance of it.
    ConsumerIdentity {
        application: Option<String>,
        instance_id: Option<String>,
    }
);

wire!(
    /// `baton.GetSecretKeyring`. With `Consumer`, the fetch is also a report: the server
    /// records that this consumer holds the keyring it answers with.
    GetSecretKeyringRequest {
        secret_id: Option<String>,
        consumer: Option<ConsumerIdentity>,
        lease_seconds: Option<i64>,
    }
);

wire!(
    /// What a consumer holds of one secret.
    ConsumerHolding {
        secret_id: Option<String>,
        current_version_id: Option<String>,
        accepted_version_ids: Option<Vec<String>>,
    }
);

wire!(
    /// `baton.ReportConsumer`: a heartbeat with what the consumer holds, renewing its lease.
    ReportConsumerRequest {
        application: Option<String>,
        instance_id: Option<String>,
        lease_seconds: Option<i64>,
        holdings: Option<Vec<ConsumerHolding>>,
    }
);

wire!(ReportConsumerResponse {
    lease_seconds: Option<i64>,
    /// Holdings whose secret does not exist (or no longer does); they were not recorded.
    unknown_secret_ids: Option<Vec<String>>,
});

wire!(Consumer {
    application: Option<String>,
    instance_id: Option<String>,
    current_version_id: Option<String>,
    accepted_version_ids: Option<Vec<String>>,
    last_seen_date: Option<f64>,
    lease_expires_date: Option<f64>,
    live: Option<bool>,
    /// The ARN of the principal that reports it.
    principal: Option<String>,
});

wire!(
    /// `baton.ListConsumers`: per secret, who holds which version and when it was last seen.
    ListConsumersResponse {
        #[serde(rename = "ARN")]
        arn: Option<String>,
        name: Option<String>,
        current_version_id: Option<String>,
        consumers: Option<Vec<Consumer>>,
        last_plain_read_date: Option<f64>,
    }
);

wire!(WatchedSecret {
    secret_id: Option<String>,
    #[serde(rename = "ARN")]
    arn: Option<String>,
    revision: Option<String>,
    deleted: Option<bool>,
    /// With `IncludeKeyrings`, the changed secret's keyring, as `baton.GetSecretKeyring`
    /// answers it; absent when the caller may not read it (its own fetch then says why).
    keyring: Option<GetSecretKeyringResponse>,
});

wire!(
    /// `baton.WatchSecrets`: a long poll that answers as soon as one of the secrets' revision
    /// differs from the one given, or after `WaitSeconds` with nothing changed. With
    /// `IncludeKeyrings`, each changed secret comes with its keyring, read and authorized as
    /// `baton.GetSecretKeyring` would (`baton:GetSecretKeyring`) but not reported: an answer
    /// may never reach a consumer that has stopped. `Holdings` (with `Consumer` and
    /// `LeaseSeconds`) is the consumer's word on what it holds once it has installed them,
    /// recorded on arrival as `baton.ReportConsumer` records it: the next watch is the report,
    /// so a change still costs one request where a watcher made two.
    WatchSecretsRequest {
        secrets: Option<Vec<WatchedSecret>>,
        wait_seconds: Option<i64>,
        include_keyrings: Option<bool>,
        consumer: Option<ConsumerIdentity>,
        lease_seconds: Option<i64>,
        holdings: Option<Vec<ConsumerHolding>>,
    }
);

wire!(WatchSecretsResponse { changed: Option<Vec<WatchedSecret>> });

wire!(
    /// A webhook subscription to the event log. `SigningSecret` is returned once, by
    /// `baton.CreateSubscription`. Empty filters match everything.
    Subscription {
        subscription_id: Option<String>,
        url: Option<String>,
        event_names: Option<Vec<String>>,
        secret_name_prefix: Option<String>,
        tag_key: Option<String>,
        tag_value: Option<String>,
        max_attempts: Option<i64>,
        signing_secret: Option<String>,
        create_date: Option<f64>,
        delivered_through_seq: Option<i64>,
    }
);

wire!(ListSubscriptionsResponse { subscriptions: Option<Vec<Subscription>> });

wire!(SubscriptionIdRequest {
    subscription_id: Option<String>,
    /// For RedeliverDeadLetters: one event only.
    seq: Option<i64>,
});

wire!(DeadLetter {
    subscription_id: Option<String>,
    seq: Option<i64>,
    event_name: Option<String>,
    secret_name: Option<String>,
    attempts: Option<i64>,
    last_error: Option<String>,
    failed_date: Option<f64>,
});

wire!(ListDeadLettersResponse { dead_letters: Option<Vec<DeadLetter>> });

wire!(RedeliverResponse {
    redelivered: Option<i64>,
    still_failing: Option<Vec<DeadLetter>>,
});

wire!(
    /// `baton.ListEvents`: the event log after `NextToken`, oldest first.
    ListEventsRequest {
        secret_id: Option<String>,
        max_results: Option<i64>,
        next_token: Option<String>,
    }
);

wire!(
    /// Events in EventBridge's shape. `NextToken` is always set: it is where to read on from,
    /// also when there is nothing new yet.
    ListEventsResponse {
        events: Option<Vec<serde_json::Value>>,
        next_token: Option<String>,
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_use_aws_member_names_and_omit_empty_ones() {
        let response = CreateSecretResponse {
            arn: Some("arn:x".into()),
            name: Some("n".into()),
            version_id: None,
            replication_status: None,
        };
        assert_eq!(
            serde_json::to_string(&response).unwrap(),
            r#"{"ARN":"arn:x","Name":"n"}"#
        );
        let request: RotateSecretRequest = serde_json::from_str(
            r#"{"SecretId":"s","RotationLambdaARN":"arn:l","RotationRules":{"AutomaticallyAfterDays":3},"Unknown":1}"#,
        )
        .unwrap();
        assert_eq!(request.rotation_lambda_arn.as_deref(), Some("arn:l"));
        assert_eq!(
            request.rotation_rules.unwrap().automatically_after_days,
            Some(3)
        );
    }

    #[test]
    fn debug_output_redacts_secret_values() {
        let value = SecretValue {
            name: Some("db".into()),
            secret_string: Some("pa55word-xyz".into()),
            secret_binary: Some("c2VjcmV0".into()),
            ..Default::default()
        };
        let shown = format!("{value:?}");
        assert!(shown.contains("db"));
        assert!(
            !shown.contains("pa55word-xyz") && !shown.contains("c2VjcmV0"),
            "{shown}"
        );
        let key = AccessKey {
            secret_access_key: Some("topsecretkey".into()),
            ..Default::default()
        };
        assert!(!format!("{key:?}").contains("topsecretkey"));
    }

    #[test]
    fn error_body_reads_both_message_spellings() {
        let a: ErrorBody = serde_json::from_str(r#"{"__type":"X","message":"m"}"#).unwrap();
        let b: ErrorBody = serde_json::from_str(r#"{"__type":"X","Message":"m"}"#).unwrap();
        assert_eq!(a, b);
    }
}

wire!(
    /// `baton.RotateRootKey`: starts a rotation of the root key. Without `KeyId` the server
    /// makes the new key itself (root key file); with it, the new key is one the operator has
    /// already added to every node's key source.
    RotateRootKeyRequest {
        key_id: Option<String>,
    }
);

wire!(DescribeRootKeyRequest {});

wire!(
    /// One node's last heartbeat, as `baton.DescribeRootKey` shows it.
    RootKeyNode {
        node_id: Option<String>,
        address: Option<String>,
        keys_held: Option<Vec<String>>,
        wraps_with: Option<String>,
        seconds_since_heartbeat: Option<f64>,
        live: Option<bool>,
    }
);

wire!(
    /// `baton.DescribeRootKey` (and the answer of `baton.RotateRootKey`).
    DescribeRootKeyResponse {
        /// `None` (never rotated), `Added`, `Promoted`, `Rewrapped` or `Retired`.
        phase: Option<String>,
        /// The key new wraps use.
        primary_key: Option<String>,
        new_key: Option<String>,
        /// Keys that still open something: the old and new keys during a rotation.
        keys_live: Option<Vec<String>>,
        retired_keys: Option<Vec<String>>,
        rewrapped_count: Option<i64>,
        remaining_count: Option<i64>,
        started_date: Option<f64>,
        phase_date: Option<f64>,
        /// What the rotation waits for, in words; absent when it waits for nothing.
        waiting_for: Option<String>,
        /// Where this node's root keys come from.
        key_source: Option<String>,
        nodes: Option<Vec<RootKeyNode>>,
    }
);
