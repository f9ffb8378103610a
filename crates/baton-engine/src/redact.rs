//! What a failed external step printed, made safe to keep: the last bytes of its output with
//! every secret the step could have seen replaced.

use baton_crypto::SecretBytes;

/// How much of a failed step's output is kept: the end, where the error usually is.
pub(crate) const OUTPUT_TAIL_BYTES: usize = 4096;

const MARK: &str = "[REDACTED]";

/// The strings to hide for one secret value: the value itself and, when it is a JSON object
/// (AWS's database secrets are), every string in it of 4 characters or more, since a rotation
/// function may print one field (a password) rather than the whole value.
fn needles(value: &SecretBytes) -> Vec<String> {
    let Ok(text) = std::str::from_utf8(value.expose()) else {
        return Vec::new();
    };
    let mut out = vec![text.to_owned()];
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
        collect_strings(&json, &mut out);
    }
    out.retain(|s| s.chars().count() >= 4);
    // Longest first, so a field inside the whole value never leaves part of it behind.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out
}

fn collect_strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// The last [`OUTPUT_TAIL_BYTES`] of `output` as text, with every secret hidden. Redaction runs
/// on the whole output before it is cut, so a secret split by the cut is still hidden.
pub(crate) fn tail(output: &[u8], secrets: &[&SecretBytes]) -> String {
    let mut text = String::from_utf8_lossy(output).into_owned();
    for secret in secrets {
        for needle in needles(secret) {
            if text.contains(&needle) {
                text = text.replace(&needle, MARK);
            }
        }
    }
    let text = text.trim();
    if text.len() <= OUTPUT_TAIL_BYTES {
        return text.to_owned();
    }
    let mut start = text.len() - OUTPUT_TAIL_BYTES;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

/// Keeps the last `OUTPUT_TAIL_BYTES * 4` bytes read, enough for [`tail`] after redaction.
#[derive(Debug, Default)]
pub(crate) struct Tail(Vec<u8>);

impl Tail {
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
        let keep = OUTPUT_TAIL_BYTES * 4;
        if self.0.len() > keep {
            let cut = self.0.len() - keep;
            self.0.drain(..cut);
        }
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_values_and_json_fields_are_hidden_and_the_end_is_kept() {
        let value = SecretBytes::from(
            br#"{"username":"app","password":"s3cr3t-pass","port":5432}"#.to_vec(),
        );
        let token = SecretBytes::from(b"session-token-123".to_vec());
        let output =
            b"connecting as app\nerror: password s3cr3t-pass rejected (token session-token-123)\n";
        let shown = tail(output, &[&value, &token]);
        assert!(
            !shown.contains("s3cr3t-pass") && !shown.contains("session-token-123"),
            "{shown}"
        );
        assert!(shown.contains("password [REDACTED] rejected"), "{shown}");
        assert!(
            shown.contains("as app"),
            "short strings such as the user name stay: {shown}"
        );

        let long: Vec<u8> = std::iter::repeat_n(b'x', 10_000)
            .chain(b"the end".iter().copied())
            .collect();
        let shown = tail(&long, &[]);
        assert!(
            shown.ends_with("the end") && shown.len() <= OUTPUT_TAIL_BYTES + 3,
            "{}",
            shown.len()
        );

        let mut kept = Tail::default();
        for _ in 0..100 {
            kept.push(&[b'y'; 1000]);
        }
        assert_eq!(kept.into_bytes().len(), OUTPUT_TAIL_BYTES * 4);
    }
}
