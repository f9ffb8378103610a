//! `SecretBytes`: owned secret memory that is wiped on drop and redacted in `Debug`.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Bytes that must not leak: wiped when dropped, shown as `SecretBytes([REDACTED; n])`.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares with another secret in constant time.
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        crate::constant_time_eq(&self.0, other)
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }
}

impl From<String> for SecretBytes {
    fn from(s: String) -> Self {
        SecretBytes(s.into_bytes())
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([REDACTED; {}])", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_bytes() {
        let secret = SecretBytes::from("hunter2-very-secret".to_owned());
        let shown = format!("{secret:?} {secret:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("REDACTED"));
    }

    #[test]
    fn equality_in_constant_time_still_compares_contents() {
        let secret = SecretBytes::from(b"abc".to_vec());
        assert!(secret.ct_eq(b"abc"));
        assert!(!secret.ct_eq(b"abd"));
        assert!(!secret.ct_eq(b"ab"));
    }
}
