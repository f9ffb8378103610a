//! The built-in rotators. They have no target system: createSecret generates the new value in
//! the engine, setSecret and testSecret have nothing to do, and the engine's own label moves
//! are finishSecret and retire.

use baton_core::rotation::Rotation;
use baton_core::{AWSCURRENT, AWSPENDING, NewVersion, SecretRecord, SecretValueKind, Timestamp};
use baton_crypto::{DataKey, KeyPairType, PasswordOptions, RootKey, SecretBytes, value_aad};
use serde_json::Value;
use zeroize::Zeroize as _;

/// Generates a random password, referenced by a RotationLambdaARN whose function name is this.
pub const RANDOM_ROTATOR: &str = "baton-random";
/// Generates an asymmetric key pair.
pub const KEYPAIR_ROTATOR: &str = "baton-keypair";
/// Generates new key material for a KMS key, of the key's spec. Every KMS key rotates with it.
pub const KMS_ROTATOR: &str = "baton-kms";
/// Rotates a PostgreSQL user's password, single-user or alternating users.
pub const POSTGRES_ROTATOR: &str = "baton-postgres";
/// Rotates a MySQL or MariaDB user's password, single-user or alternating users.
pub const MYSQL_ROTATOR: &str = "baton-mysql";
/// Characters left out of database passwords, as AWS's database rotation functions do, so a
/// password survives connection strings and shells.
pub const DB_PASSWORD_EXCLUDED: &str = "/@\"'\\";
/// The key type `baton-keypair` generates when the secret's value names none.
pub const DEFAULT_KEY_TYPE: KeyPairType = KeyPairType::Rsa2048;

/// A built-in rotator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// A new password under GetRandomPassword's defaults. A JSON object value keeps its other
    /// fields and gets a new `password`.
    Random,
    /// A new key pair. The value is a JSON object with `key_type`, `private_key_pem` (PKCS#8),
    /// `public_key_pem` (SPKI) and `public_jwk` whose `kid` is the version id; other fields of
    /// the current value are kept. The key type is the current value's `key_type`, or
    /// [`DEFAULT_KEY_TYPE`].
    KeyPair,
    /// New material for a KMS key (the secret's `key`), stored as a binary value: raw bytes
    /// for symmetric and HMAC keys, PKCS#8 DER for asymmetric ones.
    Kms,
    /// A database user's new password (and, for alternating users, the other user's name) in
    /// the JSON shape of AWS's database secrets; set, tested and retired on the database.
    Database(baton_dbrotate::Engine),
}

impl Builtin {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            RANDOM_ROTATOR => Some(Self::Random),
            KEYPAIR_ROTATOR => Some(Self::KeyPair),
            KMS_ROTATOR => Some(Self::Kms),
            POSTGRES_ROTATOR => Some(Self::Database(baton_dbrotate::Engine::Postgres)),
            MYSQL_ROTATOR => Some(Self::Database(baton_dbrotate::Engine::Mysql)),
            _ => None,
        }
    }
}

/// createSecret of a built-in: adds the pending version holding a new value. Idempotent: a
/// pending version that exists already is kept.
pub fn create_value(
    data_key: &DataKey,
    builtin: Builtin,
    secret: &mut SecretRecord,
    rotation: &Rotation,
    now: Timestamp,
) -> Result<(), String> {
    if secret.version(&rotation.version_id).is_some() {
        return Ok(());
    }
    let mut current = match &rotation.old_version_id {
        Some(old) => secret
            .version(old)
            .filter(|v| v.kind == SecretValueKind::String)
            .map(|v| data_key.open(&v.sealed_value, &value_aad(&secret.id, old)))
            .transpose()
            .map_err(|e| e.to_string())?
            .and_then(|plain| serde_json::from_slice::<Value>(plain.expose()).ok())
            .filter(Value::is_object),
        None => None,
    };
    let value = match builtin {
        Builtin::Random => random_value(current.as_mut()),
        Builtin::KeyPair => keypair_value(current.as_mut(), &rotation.version_id),
        Builtin::Database(engine) => database_value(current.as_mut(), engine),
        // Key material: the old version is binary, so `current` is None here.
        Builtin::Kms => kms_material(secret),
    };
    if let Some(current) = &mut current {
        wipe(current);
    }
    let value = value?;
    let sealed_value = data_key
        .seal(value.expose(), &value_aad(&secret.id, &rotation.version_id))
        .map_err(|e| e.to_string())?;
    secret
        .add_version(
            NewVersion {
                version_id: rotation.version_id.clone(),
                kind: if builtin == Builtin::Kms {
                    SecretValueKind::Binary
                } else {
                    SecretValueKind::String
                },
                sealed_value,
                labels: Some(vec![AWSPENDING.to_owned()]),
            },
            now,
        )
        .map_err(|e| e.to_string())
}

/// Whether the KMS key whose keyring `secret` is rotates at once: symmetric and HMAC keys.
/// Their material never leaves Baton and every node reads it from the store, so no consumer
/// can hold an old copy and no gate has anything to wait for. Asymmetric keys rotate in
/// phases, because their public keys live in JWKS and GetPublicKey caches outside Baton.
pub fn rotates_at_once(secret: &SecretRecord) -> bool {
    secret
        .key
        .as_ref()
        .and_then(|meta| baton_crypto::kms::KeySpec::parse(&meta.spec))
        .is_some_and(|spec| !spec.is_asymmetric())
}

/// Rotates a symmetric or HMAC KMS key at once, as AWS KMS does: new material of the key's
/// spec becomes AWSCURRENT under `version_id`, the old current version AWSPREVIOUS. Every
/// version keeps decrypting what it encrypted. The caller saves `secret`.
pub fn rotate_key_at_once(
    root_key: &RootKey,
    secret: &mut SecretRecord,
    version_id: &str,
    now: Timestamp,
) -> Result<(), String> {
    if !rotates_at_once(secret) {
        return Err(format!(
            "{} is not a symmetric or HMAC KMS key; it rotates in phases",
            secret.arn
        ));
    }
    let data_key = root_key
        .unwrap(&secret.wrapped_data_key, &secret.id)
        .map_err(|e| e.to_string())?;
    let material = kms_material(secret)?;
    let sealed_value = data_key
        .seal(material.expose(), &value_aad(&secret.id, version_id))
        .map_err(|e| e.to_string())?;
    secret
        .add_version(
            NewVersion {
                version_id: version_id.to_owned(),
                kind: SecretValueKind::Binary,
                sealed_value,
                labels: Some(vec![AWSCURRENT.to_owned()]),
            },
            now,
        )
        .map_err(|e| e.to_string())?;
    secret.rotation.last_rotated_at = Some(now);
    Ok(())
}

/// New key material of the spec of the KMS key whose keyring `secret` is.
pub fn kms_material(secret: &SecretRecord) -> Result<SecretBytes, String> {
    let meta = secret
        .key
        .as_ref()
        .ok_or_else(|| format!("{KMS_ROTATOR} rotates KMS keys only, and this is a secret"))?;
    let spec = baton_crypto::kms::KeySpec::parse(&meta.spec)
        .ok_or_else(|| format!("the key's spec {:?} is not one Baton knows", meta.spec))?;
    baton_crypto::kms::generate_key_material(spec).map_err(|e| e.to_string())
}

fn random_value(current: Option<&mut Value>) -> Result<SecretBytes, String> {
    let password =
        baton_crypto::random_password(&PasswordOptions::default()).map_err(|e| e.to_string())?;
    let password = std::str::from_utf8(password.expose())
        .map_err(|_| "generated password is not UTF-8".to_owned())?
        .to_owned();
    match current {
        Some(object) => {
            object["password"] = Value::String(password);
            serialize(object)
        }
        None => Ok(SecretBytes::from(password)),
    }
}

fn keypair_value(current: Option<&mut Value>, version_id: &str) -> Result<SecretBytes, String> {
    let mut empty = Value::Object(serde_json::Map::new());
    let object = current.unwrap_or(&mut empty);
    let key_type = match object.get("key_type") {
        None => DEFAULT_KEY_TYPE,
        Some(Value::String(name)) => KeyPairType::parse(name).ok_or_else(|| {
            format!(
                "the secret's key_type {name:?} is not one of {}",
                KeyPairType::ALL.map(KeyPairType::name).join(", ")
            )
        })?,
        Some(_) => return Err("the secret's key_type must be a string".to_owned()),
    };
    let pair = baton_crypto::generate_key_pair(key_type, version_id).map_err(|e| e.to_string())?;
    let private_pem = std::str::from_utf8(pair.private_key_pem.expose())
        .map_err(|_| "generated PEM is not UTF-8".to_owned())?;
    object["key_type"] = key_type.name().into();
    object["private_key_pem"] = private_pem.into();
    object["public_key_pem"] = pair.public_key_pem.into();
    object["public_jwk"] = pair.public_jwk;
    let value = serialize(object);
    wipe(object);
    value
}

/// The next database credentials: a new password, and for alternating users (the value names
/// a `masterarn`) the user that takes turns with the current one.
fn database_value(
    current: Option<&mut Value>,
    engine: baton_dbrotate::Engine,
) -> Result<SecretBytes, String> {
    let object = current.ok_or_else(|| {
        "the secret's value must be a database secret: JSON with engine, host, username and \
         password"
            .to_owned()
    })?;
    let parsed = baton_dbrotate::DbSecret::parse(object.to_string().as_bytes())
        .map_err(|e| e.to_string())?;
    let kind = parsed.engine_kind().map_err(|e| e.to_string())?;
    if kind != engine {
        return Err(format!(
            "the secret's engine is {:?}, but the rotator is for {}",
            parsed.engine,
            engine.name()
        ));
    }
    let password = baton_crypto::random_password(&PasswordOptions {
        exclude_characters: DB_PASSWORD_EXCLUDED.to_owned(),
        ..PasswordOptions::default()
    })
    .map_err(|e| e.to_string())?;
    let password = std::str::from_utf8(password.expose())
        .map_err(|_| "generated password is not UTF-8".to_owned())?
        .to_owned();
    if parsed.masterarn.is_some() {
        object["username"] = baton_dbrotate::alternate_username(&parsed.username).into();
    }
    object["password"] = Value::String(password);
    serialize(object)
}

/// Serializes straight into memory that is wiped on drop.
fn serialize(value: &Value) -> Result<SecretBytes, String> {
    let mut out = Vec::with_capacity(8192);
    serde_json::to_writer(&mut out, value).map_err(|e| e.to_string())?;
    Ok(SecretBytes::from(out))
}

/// Overwrites every string in a JSON value that held secret material before it is dropped.
fn wipe(value: &mut Value) {
    match value {
        Value::String(s) => s.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe),
        Value::Object(map) => map.values_mut().for_each(wipe),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn the_keypair_value_keeps_other_fields_and_names_its_version_in_the_jwk() {
        let mut current = object(r#"{"key_type":"ECC_NIST_P256","issuer":"auth.example"}"#);
        let value = keypair_value(Some(&mut current), "v-2").unwrap();
        let value: Value = serde_json::from_slice(value.expose()).unwrap();
        assert_eq!(value["issuer"], "auth.example");
        assert_eq!(value["key_type"], "ECC_NIST_P256");
        assert_eq!(value["public_jwk"]["kid"], "v-2");
        assert_eq!(value["public_jwk"]["crv"], "P-256");
        assert!(
            value["private_key_pem"]
                .as_str()
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----\n")
        );
        assert!(
            value["public_key_pem"]
                .as_str()
                .unwrap()
                .starts_with("-----BEGIN PUBLIC KEY-----\n")
        );
    }

    #[test]
    fn the_keypair_value_defaults_to_rsa_2048_and_refuses_unknown_types() {
        let value = keypair_value(None, "v-1").unwrap();
        let value: Value = serde_json::from_slice(value.expose()).unwrap();
        assert_eq!(value["key_type"], "RSA_2048");
        assert_eq!(value["public_jwk"]["kty"], "RSA");
        let err = keypair_value(Some(&mut object(r#"{"key_type":"DSA_1024"}"#)), "v").unwrap_err();
        assert!(err.contains("DSA_1024") && err.contains("ED25519"), "{err}");
        let err = keypair_value(Some(&mut object(r#"{"key_type":7}"#)), "v").unwrap_err();
        assert!(err.contains("must be a string"), "{err}");
    }

    #[test]
    fn the_random_value_replaces_only_the_password_of_a_json_object() {
        let mut current = object(r#"{"username":"app","password":"old"}"#);
        let value = random_value(Some(&mut current)).unwrap();
        let value: Value = serde_json::from_slice(value.expose()).unwrap();
        assert_eq!(value["username"], "app");
        assert_ne!(value["password"], "old");
        assert_eq!(value["password"].as_str().unwrap().len(), 32);
        let plain = random_value(None).unwrap();
        assert_eq!(plain.expose().len(), 32);
    }

    #[test]
    fn wipe_clears_every_string() {
        let mut v = object(r#"{"a":"secret","b":["x",{"c":"y"}],"n":1}"#);
        wipe(&mut v);
        assert_eq!(v, object(r#"{"a":"","b":["",{"c":""}],"n":1}"#));
    }
}
