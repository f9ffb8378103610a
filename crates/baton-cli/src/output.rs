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
