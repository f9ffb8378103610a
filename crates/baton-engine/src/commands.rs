//! Command rotators: programs the operator defines, never the API.
//!
//! A command runs on the server's machine with the server's privileges, so only whoever
//! controls the server's configuration may define one: `[[rotator]]` tables in the config file,
//! or one TOML file per rotator in `--rotators-dir`. A command is an absolute path and its
//! arguments (no shell unless the operator writes one), optionally pinned by the SHA-256 of the
//! executable, which is checked before every run. It runs with a clean environment (the
//! endpoint, the region, the step's temporary key, and the variables its definition names), in
//! a process group of its own, and the step's timeout ends the whole group.
//!
//! The directory and its files must not be writable by group or others; a file that is is
//! refused, so a second user on the machine cannot plant a rotator. Files are read at each use,
//! so adding one needs no restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Longest a command step may take, as for webhooks.
const TIMEOUT_SECONDS_MAX: u64 = 900;
/// The step timeout when the definition names none.
pub const TIMEOUT_SECONDS_DEFAULT: u64 = 120;

/// One operator-defined command rotator. Its `env` may carry credentials, so `Debug` names
/// the variables and never their values.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandRotator {
    pub name: String,
    /// The absolute path of the executable, then its arguments.
    pub command: Vec<String>,
    /// The executable's SHA-256, in hex: it must match before every run.
    pub sha256: Option<String>,
    pub timeout_seconds: Option<u64>,
    /// Variables the command gets besides the endpoint, region and temporary key.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The execution policy: an IAM policy document (JSON) added to each step's temporary key,
    /// beside the rotation operations on the rotated secret, as a Lambda's execution role.
    /// AWS's alternating-users functions need it to read the secret named by `masterarn`.
    pub policy: Option<String>,
}

impl std::fmt::Debug for CommandRotator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandRotator")
            .field("name", &self.name)
            .field("command", &self.command)
            .field("sha256", &self.sha256)
            .field("timeout_seconds", &self.timeout_seconds)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("policy", &self.policy.as_ref().map(|_| "set"))
            .finish()
    }
}

impl CommandRotator {
    /// Checks a definition; the error names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        check_name(&self.name)?;
        let what = format!("command rotator {:?}", self.name);
        let Some(program) = self.command.first() else {
            return Err(format!("{what}: command is empty"));
        };
        if !Path::new(program).is_absolute() {
            return Err(format!(
                "{what}: the command must start with an absolute path, not {program:?}"
            ));
        }
        if let Some(hash) = &self.sha256
            && (hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(format!("{what}: sha256 must be 64 hexadecimal digits"));
        }
        if let Some(t) = self.timeout_seconds
            && !(1..=TIMEOUT_SECONDS_MAX).contains(&t)
        {
            return Err(format!(
                "{what}: timeout_seconds must be between 1 and {TIMEOUT_SECONDS_MAX}"
            ));
        }
        for key in self.env.keys() {
            if key.starts_with("AWS_") || key.starts_with("BATON_") || key.is_empty() {
                return Err(format!(
                    "{what}: env may not set {key:?}; AWS_* variables carry the step's key"
                ));
            }
        }
        if let Some(policy) = &self.policy {
            check_execution_policy(policy).map_err(|e| format!("{what}: policy: {e}"))?;
        }
        Ok(())
    }

    pub fn timeout_seconds(&self) -> u64 {
        self.timeout_seconds.unwrap_or(TIMEOUT_SECONDS_DEFAULT)
    }

    /// Refuses to run an executable whose SHA-256 differs from the pinned one.
    pub fn check_executable(&self) -> Result<(), String> {
        let Some(expected) = &self.sha256 else {
            return Ok(());
        };
        let program = &self.command[0];
        let bytes = std::fs::read(program).map_err(|e| format!("cannot read {program}: {e}"))?;
        let actual: String = baton_crypto::sha256(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(format!(
                "{program} does not match the SHA-256 pinned for rotator {:?} (it is {actual}); \
                 it was changed since it was pinned",
                self.name
            ));
        }
        Ok(())
    }
}

/// Rotator names: 1 to 64 letters, digits, '-' and '_', not starting with `baton-`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "Invalid rotator name '{name}': use 1 to 64 letters, digits, '-' and '_'."
        ));
    }
    if name.starts_with("baton-") {
        return Err(format!(
            "Rotator names starting with baton- are reserved for built-in rotators; '{name}' is \
             not available."
        ));
    }
    Ok(())
}

/// The command rotators of the configuration and of the rotators directory.
#[derive(Debug, Default)]
pub struct CommandRotators {
    configured: Vec<CommandRotator>,
    dir: Option<PathBuf>,
}

impl CommandRotators {
    /// Checks every configured definition, and that the directory is private.
    pub fn new(configured: Vec<CommandRotator>, dir: Option<PathBuf>) -> Result<Self, String> {
        let mut names = std::collections::BTreeSet::new();
        for rotator in &configured {
            rotator.validate()?;
            if !names.insert(rotator.name.clone()) {
                return Err(format!(
                    "command rotator {:?} is defined twice in the configuration",
                    rotator.name
                ));
            }
        }
        if let Some(dir) = &dir {
            check_private(dir)?;
        }
        let rotators = CommandRotators { configured, dir };
        // Every file must parse now; a broken one is an error at start, not at rotation time.
        rotators.list()?;
        Ok(rotators)
    }

    /// The definition named `name`: from the configuration, else from `<dir>/<name>.toml`.
    pub fn find(&self, name: &str) -> Result<Option<CommandRotator>, String> {
        if let Some(r) = self.configured.iter().find(|r| r.name == name) {
            return Ok(Some(r.clone()));
        }
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        if check_name(name).is_err() {
            return Ok(None);
        }
        let path = dir.join(format!("{name}.toml"));
        if !path.exists() {
            return Ok(None);
        }
        read_definition(&path).map(Some)
    }

    /// Every definition, configured ones first, then the directory's in name order.
    pub fn list(&self) -> Result<Vec<CommandRotator>, String> {
        let mut all = self.configured.clone();
        if let Some(dir) = &self.dir {
            check_private(dir)?;
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| format!("reading the rotators directory {}: {e}", dir.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect();
            files.sort();
            for path in files {
                let rotator = read_definition(&path)?;
                if all.iter().any(|r| r.name == rotator.name) {
                    return Err(format!(
                        "command rotator {:?} is defined both in the configuration and in {}",
                        rotator.name,
                        path.display()
                    ));
                }
                all.push(rotator);
            }
        }
        Ok(all)
    }
}

/// One definition file: private, valid, and named after its rotator.
fn read_definition(path: &Path) -> Result<CommandRotator, String> {
    check_private(path)?;
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let rotator: CommandRotator =
        toml::from_str(&text).map_err(|e| format!("in {}: {e}", path.display()))?;
    rotator
        .validate()
        .map_err(|e| format!("in {}: {e}", path.display()))?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if stem != rotator.name {
        return Err(format!(
            "{} defines rotator {:?}; the file must be named {}.toml",
            path.display(),
            rotator.name,
            rotator.name
        ));
    }
    Ok(rotator)
}

/// An execution policy is an identity policy, checked with the same findings as any other.
pub fn check_execution_policy(document: &str) -> Result<baton_iam::Policy, baton_iam::PolicyError> {
    baton_iam::Policy::parse(document, baton_iam::PolicyKind::Identity)
}

/// Refuses a path that group or others may write: they could plant or change a command.
fn check_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is writable by group or others (mode {:o}); rotator definitions must be writable \
             by their owner only",
            path.display(),
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn definitions_come_from_a_private_directory_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        write(
            dir.path(),
            "pg.toml",
            "name = \"pg\"\ncommand = [\"/usr/bin/python3\", \"/opt/rotate.py\"]\n\
             timeout_seconds = 30\nenv = { PATH = \"/usr/bin\" }\n",
            0o600,
        );
        let rotators = CommandRotators::new(Vec::new(), Some(dir.path().to_owned())).unwrap();
        let pg = rotators.find("pg").unwrap().unwrap();
        assert_eq!(pg.command, ["/usr/bin/python3", "/opt/rotate.py"]);
        assert_eq!(pg.timeout_seconds(), 30);
        assert_eq!(rotators.find("absent").unwrap(), None);
        assert_eq!(rotators.find("../etc/passwd").unwrap(), None);

        // A file others may write is refused, and so is a directory others may write.
        write(
            dir.path(),
            "pg.toml",
            "name = \"pg\"\ncommand = [\"/bin/true\"]\n",
            0o622,
        );
        let refused = rotators.find("pg").unwrap_err();
        assert!(refused.contains("writable by group or others"), "{refused}");
        write(
            dir.path(),
            "pg.toml",
            "name = \"pg\"\ncommand = [\"/bin/true\"]\n",
            0o600,
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(CommandRotators::new(Vec::new(), Some(dir.path().to_owned())).is_err());
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();

        // A relative command, a misnamed file and an unknown key are errors that say so.
        for (text, expected) in [
            ("name = \"pg\"\ncommand = [\"python3\"]\n", "absolute path"),
            (
                "name = \"other\"\ncommand = [\"/bin/true\"]\n",
                "must be named other.toml",
            ),
            (
                "name = \"pg\"\ncommand = [\"/bin/true\"]\nshell = true\n",
                "unknown field",
            ),
            (
                "name = \"pg\"\ncommand = [\"/bin/true\"]\nenv = { AWS_REGION = \"x\" }\n",
                "env may not set",
            ),
        ] {
            write(dir.path(), "pg.toml", text, 0o600);
            let error = rotators.find("pg").unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn a_pinned_executable_must_match_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let program = write(dir.path(), "rotate.sh", "#!/bin/sh\nexit 0\n", 0o700);
        let hash: String = baton_crypto::sha256(b"#!/bin/sh\nexit 0\n")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let rotator = CommandRotator {
            name: "pinned".into(),
            command: vec![program.to_string_lossy().into_owned()],
            sha256: Some(hash),
            timeout_seconds: None,
            env: BTreeMap::new(),
            policy: None,
        };
        rotator.validate().unwrap();
        rotator.check_executable().unwrap();
        let mut with_policy = rotator.clone();
        with_policy.policy = Some(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"secretsmanager:GetSecretValue","Resource":"arn:aws:secretsmanager:us-east-1:123456789012:secret:master-*"}]}"#.into(),
        );
        with_policy.validate().unwrap();
        with_policy.policy = Some(r#"{"Statement":[{"Effect":"Allow","Action":"s3:Get"}]}"#.into());
        let refused = with_policy.validate().unwrap_err();
        assert!(
            refused.starts_with("command rotator \"pinned\": policy: "),
            "{refused}"
        );
        let mut with_env = rotator.clone();
        with_env
            .env
            .insert("DB_PASSWORD".into(), "hunter2-secret".into());
        let shown = format!("{with_env:?}");
        assert!(
            shown.contains("DB_PASSWORD") && !shown.contains("hunter2-secret"),
            "{shown}"
        );
        std::fs::write(&program, "#!/bin/sh\ncurl evil\n").unwrap();
        let refused = rotator.check_executable().unwrap_err();
        assert!(refused.contains("does not match the SHA-256"), "{refused}");
    }
}
