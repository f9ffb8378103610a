//! Rendering responses: JSON for scripts, tables for people.

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde::Serialize;

use crate::connect::OutputFormat;

pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut table = Table::new();
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_header(header.to_vec());
    for row in rows {
        table.add_row(row);
    }
    println!("{table}");
}

/// Prints `value` as JSON, or calls `human` to print it for people.
pub fn show<T: Serialize>(
    format: OutputFormat,
    value: &T,
    human: impl FnOnce(&T),
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => json(value),
        OutputFormat::Table => {
            human(value);
            Ok(())
        }
    }
}

/// Seconds since the epoch as an RFC 3339 UTC time.
pub fn date(seconds: Option<f64>) -> String {
    match seconds {
        Some(s) => jiff::Timestamp::from_second(s as i64)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| s.to_string()),
        None => "-".to_owned(),
    }
}

/// A duration as a person reads it ("4 min 20 s"), as the server's messages write it. Machine
/// output (`--output json`) keeps its numbers; this is for people.
pub fn human_duration(d: std::time::Duration) -> String {
    baton_core::rotation::duration_text(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// [`human_duration`] of a number of seconds from the API (never negative on screen).
pub fn human_seconds(seconds: f64) -> String {
    human_duration(std::time::Duration::from_secs_f64(seconds.max(0.0)))
}

/// An audit entry's position as a person reads it: `7` in the shared chain, `node-…#7` in a
/// node's.
pub fn position(chain: &str, seq: i64) -> String {
    if chain.is_empty() {
        seq.to_string()
    } else {
        format!("{chain}#{seq}")
    }
}

/// Where an audit chain ends, as both a backup (and its restore) and `audit verify` print it,
/// so the lines compare as they are.
pub fn chain_end_line(chain: &str, seq: i64, hash: &str) -> String {
    format!("audit chain end: {} hash {hash}", position(chain, seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_read_as_a_person_says_them() {
        let ms = Duration::from_millis;
        assert_eq!(human_duration(ms(850)), "850 ms");
        assert_eq!(human_duration(ms(4_240)), "4.2 s");
        assert_eq!(human_duration(ms(3_000)), "3 s");
        assert_eq!(human_duration(ms(42_900)), "42 s");
        assert_eq!(human_duration(ms(260_723)), "4 min 20 s");
        assert_eq!(human_duration(ms(300_000)), "5 min");
        assert_eq!(human_duration(ms(7_500_000)), "2 h 5 min");
        assert_eq!(human_duration(ms(3_600_000)), "1 h");
        assert_eq!(human_duration(ms(273_600_000)), "3 d 4 h");
        assert_eq!(human_seconds(-3.0), "0 ms");
    }
}
