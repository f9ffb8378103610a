//! Random passwords with the options of AWS's GetRandomPassword.

use crate::{CryptoError, SecretBytes, fill_random};

const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &str = "0123456789";
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// Length bounds of GetRandomPassword.
pub const PASSWORD_LENGTH_MIN: u32 = 1;
pub const PASSWORD_LENGTH_MAX: u32 = 4096;

/// GetRandomPassword's options, with AWS's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordOptions {
    pub length: u32,
    pub exclude_characters: String,
    pub exclude_numbers: bool,
    pub exclude_punctuation: bool,
    pub exclude_uppercase: bool,
    pub exclude_lowercase: bool,
    pub include_space: bool,
    pub require_each_included_type: bool,
}

impl Default for PasswordOptions {
    fn default() -> Self {
        PasswordOptions {
            length: 32,
            exclude_characters: String::new(),
            exclude_numbers: false,
            exclude_punctuation: false,
            exclude_uppercase: false,
            exclude_lowercase: false,
            include_space: false,
            require_each_included_type: true,
        }
    }
}

/// Why a password could not be generated with the given options.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("PasswordLength must be between {PASSWORD_LENGTH_MIN} and {PASSWORD_LENGTH_MAX}.")]
    Length,
    #[error("The options exclude every character; no password can be generated.")]
    NoCharacters,
    #[error(
        "PasswordLength {length} is too short to include at least one character of each of the {required} included character types."
    )]
    TooShortForRequiredTypes { length: u32, required: usize },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Draws a uniform index below `n` by rejection sampling, so no character is favoured.
fn uniform_index(n: usize) -> Result<usize, CryptoError> {
    debug_assert!(n > 0 && n <= u32::MAX as usize);
    let n = n as u32;
    let zone = u32::MAX - (u32::MAX % n);
    loop {
        let mut b = [0u8; 4];
        fill_random(&mut b)?;
        let x = u32::from_le_bytes(b);
        if x < zone {
            return Ok((x % n) as usize);
        }
    }
}

/// Generates a password. Each included character type appears at least once when
/// `require_each_included_type` is set; the space is never a required type, as in AWS.
pub fn random_password(options: &PasswordOptions) -> Result<SecretBytes, PasswordError> {
    if !(PASSWORD_LENGTH_MIN..=PASSWORD_LENGTH_MAX).contains(&options.length) {
        return Err(PasswordError::Length);
    }
    let keep = |set: &str| -> Vec<char> {
        set.chars()
            .filter(|c| !options.exclude_characters.contains(*c))
            .collect()
    };
    let mut classes: Vec<Vec<char>> = Vec::new();
    if !options.exclude_lowercase {
        classes.push(keep(LOWER));
    }
    if !options.exclude_uppercase {
        classes.push(keep(UPPER));
    }
    if !options.exclude_numbers {
        classes.push(keep(DIGITS));
    }
    if !options.exclude_punctuation {
        classes.push(keep(PUNCTUATION));
    }
    classes.retain(|c| !c.is_empty());
    let mut all: Vec<char> = classes.concat();
    if options.include_space && !options.exclude_characters.contains(' ') {
        all.push(' ');
    }
    if all.is_empty() {
        return Err(PasswordError::NoCharacters);
    }
    let length = options.length as usize;
    let mut out: Vec<char> = Vec::with_capacity(length);
    if options.require_each_included_type {
        if classes.len() > length {
            return Err(PasswordError::TooShortForRequiredTypes {
                length: options.length,
                required: classes.len(),
            });
        }
        for class in &classes {
            out.push(class[uniform_index(class.len())?]);
        }
    }
    while out.len() < length {
        out.push(all[uniform_index(all.len())?]);
    }
    // Fisher-Yates, so the required characters sit at random positions.
    for i in (1..out.len()).rev() {
        let j = uniform_index(i + 1)?;
        out.swap(i, j);
    }
    let password: String = out.iter().collect();
    for c in out.iter_mut() {
        *c = '\0';
    }
    Ok(SecretBytes::from(password))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(options: &PasswordOptions) -> String {
        String::from_utf8(random_password(options).unwrap().expose().to_vec()).unwrap()
    }

    #[test]
    fn default_password_has_32_characters_of_every_type() {
        for _ in 0..50 {
            let p = text(&PasswordOptions::default());
            assert_eq!(p.chars().count(), 32);
            assert!(p.chars().any(|c| c.is_ascii_lowercase()));
            assert!(p.chars().any(|c| c.is_ascii_uppercase()));
            assert!(p.chars().any(|c| c.is_ascii_digit()));
            assert!(p.chars().any(|c| PUNCTUATION.contains(c)));
            assert!(!p.contains(' '));
        }
    }

    #[test]
    fn exclusions_are_honoured() {
        let options = PasswordOptions {
            length: 200,
            exclude_characters: "abcXYZ".into(),
            exclude_punctuation: true,
            exclude_numbers: true,
            ..Default::default()
        };
        let p = text(&options);
        assert!(
            p.chars()
                .all(|c| c.is_ascii_alphabetic() && !"abcXYZ".contains(c))
        );
    }

    #[test]
    fn impossible_options_are_refused_with_a_reason() {
        let none = PasswordOptions {
            exclude_lowercase: true,
            exclude_uppercase: true,
            exclude_numbers: true,
            exclude_punctuation: true,
            ..Default::default()
        };
        assert!(matches!(
            random_password(&none),
            Err(PasswordError::NoCharacters)
        ));
        let short = PasswordOptions {
            length: 3,
            ..Default::default()
        };
        assert!(matches!(
            random_password(&short),
            Err(PasswordError::TooShortForRequiredTypes { .. })
        ));
        let zero = PasswordOptions {
            length: 0,
            ..Default::default()
        };
        assert!(matches!(random_password(&zero), Err(PasswordError::Length)));
    }

    #[test]
    fn every_allowed_character_can_appear() {
        let options = PasswordOptions {
            length: 4096,
            include_space: true,
            ..Default::default()
        };
        let p = text(&options);
        let expected = LOWER.len() + UPPER.len() + DIGITS.len() + PUNCTUATION.len() + 1;
        let distinct: std::collections::BTreeSet<char> = p.chars().collect();
        assert_eq!(distinct.len(), expected);
    }
}
