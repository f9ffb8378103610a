//! Rotation schedules, following AWS's RotationRules: `AutomaticallyAfterDays`, or a
//! `ScheduleExpression` of `rate(N hours|days)` or `cron(...)` in UTC, with a `Duration` window.
//! The rotation starts at a random point inside its window, as AWS does, and never inside a
//! blackout. Time and randomness are inputs: this module reads neither.

use jiff::tz::TimeZone;

use crate::rotation::Blackout;
use crate::{CoreError, RotationRules, Timestamp};

const HOUR_MS: Timestamp = 3_600_000;
const DAY_MS: Timestamp = 24 * HOUR_MS;
/// Windows examined at most when blackouts cover whole windows.
const WINDOWS_MAX: usize = 1_000;

#[derive(Debug, Clone)]
enum Every {
    Days(i64),
    Hours(i64),
    Cron(Box<croner::Cron>),
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    every: Every,
    /// The window's length; by default an hour for hourly schedules and the rest of the UTC
    /// day otherwise, as AWS does.
    window_ms: Option<Timestamp>,
}

/// The window a rotation falls in, and the instant chosen inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextRotation {
    pub window_start: Timestamp,
    pub window_end: Timestamp,
    pub at: Timestamp,
}

fn invalid(message: String) -> CoreError {
    CoreError::InvalidParameter(message)
}

fn parse_rate(expr: &str) -> Result<Every, CoreError> {
    let inner = expr
        .strip_prefix("rate(")
        .and_then(|e| e.strip_suffix(')'))
        .ok_or_else(|| invalid(format!("Invalid rate expression: {expr}")))?;
    let (amount, unit) = inner
        .trim()
        .split_once(' ')
        .ok_or_else(|| invalid(format!("Invalid rate expression: {expr}")))?;
    let amount: i64 = amount
        .parse()
        .map_err(|_| invalid(format!("Invalid rate expression: {expr}")))?;
    match unit.trim() {
        "hour" | "hours" if (4..=23).contains(&amount) => Ok(Every::Hours(amount)),
        "day" | "days" if (1..=1000).contains(&amount) => Ok(Every::Days(amount)),
        _ => Err(invalid(format!(
            "Invalid rate expression: {expr}. Use rate(N hours) with N from 4 to 23, or \
             rate(N days) with N from 1 to 1000."
        ))),
    }
}

fn parse_cron(expr: &str) -> Result<Every, CoreError> {
    let inner = expr
        .strip_prefix("cron(")
        .and_then(|e| e.strip_suffix(')'))
        .ok_or_else(|| invalid(format!("Invalid cron expression: {expr}")))?;
    let fields: Vec<&str> = inner.split_whitespace().collect();
    if fields.len() != 6 {
        return Err(invalid(format!(
            "Invalid cron expression: {expr}. AWS cron has six fields: minutes hours \
             day-of-month month day-of-week year."
        )));
    }
    if (fields[2] == "?") == (fields[4] == "?") {
        return Err(invalid(format!(
            "Invalid cron expression: {expr}. Exactly one of day-of-month and day-of-week must \
             be '?'."
        )));
    }
    let parser = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .year(croner::parser::Year::Required)
        // AWS numbers weekdays 1 (Sunday) to 7 (Saturday), as Quartz does.
        .alternative_weekdays(true)
        .build();
    let cron = parser
        .parse(&format!("0 {inner}"))
        .map_err(|e| invalid(format!("Invalid cron expression: {expr}: {e}")))?;
    Ok(Every::Cron(Box::new(cron)))
}

fn parse_duration(duration: &str) -> Result<Timestamp, CoreError> {
    duration
        .strip_suffix('h')
        .and_then(|h| h.parse::<i64>().ok())
        .filter(|h| (1..=24).contains(h))
        .map(|h| h * HOUR_MS)
        .ok_or_else(|| {
            invalid(format!(
                "The rotation window Duration '{duration}' is invalid: use 1h to 24h."
            ))
        })
}

fn start_of_day(t: Timestamp) -> Timestamp {
    t - t.rem_euclid(DAY_MS)
}

fn civil(t: Timestamp) -> Option<jiff::civil::DateTime> {
    jiff::Timestamp::from_millisecond(t)
        .ok()
        .map(|ts| ts.to_zoned(TimeZone::UTC).datetime())
}

fn millis(dt: jiff::civil::DateTime) -> Option<Timestamp> {
    dt.to_zoned(TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp().as_millisecond())
}

impl Schedule {
    /// Parses RotationRules; `None` when they set no schedule.
    pub fn parse(rules: &RotationRules) -> Result<Option<Schedule>, CoreError> {
        let every = match (&rules.automatically_after_days, &rules.schedule_expression) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "You can't specify both AutomaticallyAfterDays and ScheduleExpression."
                        .to_owned(),
                ));
            }
            (Some(days), None) if (1..=1000).contains(days) => Every::Days(*days),
            (Some(days), None) => {
                return Err(invalid(format!(
                    "AutomaticallyAfterDays must be between 1 and 1000, got {days}."
                )));
            }
            (None, Some(expr)) if expr.starts_with("rate(") => parse_rate(expr)?,
            (None, Some(expr)) if expr.starts_with("cron(") => parse_cron(expr)?,
            (None, Some(expr)) => {
                return Err(invalid(format!(
                    "The schedule expression '{expr}' is invalid: use rate(...) or cron(...)."
                )));
            }
            (None, None) => return Ok(None),
        };
        let window_ms = rules.duration.as_deref().map(parse_duration).transpose()?;
        if let (Every::Hours(hours), Some(window)) = (&every, window_ms)
            && window > hours * HOUR_MS
        {
            return Err(invalid(format!(
                "The rotation window Duration must not be longer than the interval of \
                 rate({hours} hours)."
            )));
        }
        Ok(Some(Schedule { every, window_ms }))
    }

    fn window_len(&self, start: Timestamp) -> Timestamp {
        match (self.window_ms, &self.every) {
            (Some(len), _) => len,
            (None, Every::Hours(_)) => HOUR_MS,
            (None, _) => start_of_day(start) + DAY_MS - start,
        }
    }

    /// The first window after `last` (the last rotation, or the secret's creation).
    fn first_window_start(&self, last: Timestamp) -> Option<Timestamp> {
        match &self.every {
            Every::Days(days) => Some(start_of_day(last) + days * DAY_MS),
            Every::Hours(hours) => Some(last + hours * HOUR_MS),
            Every::Cron(cron) => self.cron_after(cron, last),
        }
    }

    fn following_window_start(&self, start: Timestamp) -> Option<Timestamp> {
        match &self.every {
            // An overdue schedule rotates at the next possible window, not a full period later.
            Every::Days(_) => Some(start + DAY_MS),
            Every::Hours(_) => Some(start + HOUR_MS),
            Every::Cron(cron) => self.cron_after(cron, start),
        }
    }

    fn cron_after(&self, cron: &croner::Cron, after: Timestamp) -> Option<Timestamp> {
        let next = cron.find_next_occurrence(&civil(after)?, false).ok()?;
        millis(next)
    }

    /// When the next rotation happens: a point inside the next window that has not ended by
    /// `now`, chosen by `fraction` (uniform in `0..u64::MAX`), moved out of blackouts; a window
    /// that a blackout covers to its end is skipped.
    pub fn next_rotation(
        &self,
        last: Timestamp,
        now: Timestamp,
        blackouts: &[Blackout],
        fraction: u64,
    ) -> Option<NextRotation> {
        let mut start = self.first_window_start(last)?;
        // Skip straight to windows that can still be open at `now`.
        if let Every::Days(_) | Every::Hours(_) = self.every {
            let step = if matches!(self.every, Every::Hours(_)) {
                HOUR_MS
            } else {
                DAY_MS
            };
            if start + self.window_len(start) <= now {
                let behind = (now - start) / step;
                start += behind.saturating_sub(1) * step;
            }
        } else if start + DAY_MS < now
            && let Every::Cron(cron) = &self.every
        {
            start = self.cron_after(cron, now - DAY_MS)?;
        }
        for _ in 0..WINDOWS_MAX {
            let end = start + self.window_len(start);
            if end > now {
                let open = start.max(now);
                let span = (end - open).max(1);
                let mut at = open + ((u128::from(fraction) * span as u128) >> 64) as Timestamp;
                for _ in 0..=blackouts.len() {
                    if let Some(b) = blackouts.iter().find(|b| b.contains(at)) {
                        at = b.end_after(at);
                    }
                }
                if at < end && !blackouts.iter().any(|b| b.contains(at)) {
                    return Some(NextRotation {
                        window_start: start,
                        window_end: end,
                        at,
                    });
                }
            }
            start = self.following_window_start(start)?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(days: Option<i64>, expr: Option<&str>, duration: Option<&str>) -> RotationRules {
        RotationRules {
            automatically_after_days: days,
            schedule_expression: expr.map(Into::into),
            duration: duration.map(Into::into),
        }
    }

    fn schedule(days: Option<i64>, expr: Option<&str>, duration: Option<&str>) -> Schedule {
        Schedule::parse(&rules(days, expr, duration))
            .unwrap()
            .unwrap()
    }

    const JAN_1_2026: Timestamp = 1_767_225_600_000;

    #[test]
    fn automatically_after_days_rotates_within_the_day_n_days_later() {
        let s = schedule(Some(30), None, None);
        let next = s
            .next_rotation(JAN_1_2026 + 5 * HOUR_MS, JAN_1_2026, &[], 0)
            .unwrap();
        assert_eq!(next.window_start, JAN_1_2026 + 30 * DAY_MS);
        assert_eq!(next.window_end, JAN_1_2026 + 31 * DAY_MS);
        assert_eq!(next.at, next.window_start);
        let late = s
            .next_rotation(JAN_1_2026, JAN_1_2026, &[], u64::MAX)
            .unwrap();
        assert!(late.at < late.window_end && late.at > late.window_end - 1000);
    }

    #[test]
    fn rate_in_hours_has_a_one_hour_window_by_default() {
        let s = schedule(None, Some("rate(4 hours)"), None);
        let next = s.next_rotation(JAN_1_2026, JAN_1_2026, &[], 0).unwrap();
        assert_eq!(
            (next.window_start, next.window_end),
            (JAN_1_2026 + 4 * HOUR_MS, JAN_1_2026 + 5 * HOUR_MS)
        );
    }

    #[test]
    fn cron_uses_aws_fields_and_duration() {
        // 16:00 UTC on the 1st and 15th of every month, for two hours.
        let s = schedule(None, Some("cron(0 16 1,15 * ? *)"), Some("2h"));
        let next = s
            .next_rotation(JAN_1_2026 + 17 * HOUR_MS, JAN_1_2026, &[], 0)
            .unwrap();
        assert_eq!(next.window_start, JAN_1_2026 + 14 * DAY_MS + 16 * HOUR_MS);
        assert_eq!(next.window_end, next.window_start + 2 * HOUR_MS);
        // Weekdays count from 1 = Sunday, as in AWS: 2026-01-04 is a Sunday.
        let sunday = schedule(None, Some("cron(0 8 ? * 1 *)"), None);
        let next = sunday
            .next_rotation(JAN_1_2026, JAN_1_2026, &[], 0)
            .unwrap();
        assert_eq!(next.window_start, JAN_1_2026 + 3 * DAY_MS + 8 * HOUR_MS);
    }

    #[test]
    fn invalid_rules_name_the_problem() {
        for (r, needle) in [
            (rules(Some(3), Some("rate(1 day)"), None), "both"),
            (rules(Some(0), None, None), "AutomaticallyAfterDays"),
            (rules(None, Some("rate(2 hours)"), None), "rate("),
            (rules(None, Some("cron(0 16 1 * 1 *)"), None), "Exactly one"),
            (rules(None, Some("cron(0 16 1 *)"), None), "six fields"),
            (rules(None, Some("every day"), None), "invalid"),
            (rules(Some(1), None, Some("25h")), "Duration"),
            (rules(None, Some("rate(4 hours)"), Some("5h")), "longer"),
        ] {
            let err = Schedule::parse(&r).unwrap_err().to_string();
            assert!(err.contains(needle), "{r:?}: {err}");
        }
        assert!(Schedule::parse(&rules(None, None, None)).unwrap().is_none());
    }

    /// Property: over random schedules, last rotations, clocks, blackouts and random draws, the
    /// chosen time lies inside its window, not before `now`, and outside every blackout.
    #[test]
    fn next_rotations_fall_inside_their_window_and_outside_blackouts() {
        let mut seed: u64 = 0x1234_5678;
        let mut next = || {
            seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let expressions = [
            "rate(4 hours)",
            "rate(13 hours)",
            "rate(1 day)",
            "rate(7 days)",
            "cron(0 16 1,15 * ? *)",
            "cron(30 2 ? * 2-6 *)",
            "cron(0 0 L * ? *)",
            "cron(15 */6 * * ? *)",
        ];
        let mut checked = 0;
        for _ in 0..3_000 {
            let r = match next() % 3 {
                0 => rules(Some(1 + (next() % 90) as i64), None, None),
                _ => rules(
                    None,
                    Some(expressions[(next() % expressions.len() as u64) as usize]),
                    None,
                ),
            };
            let mut r = r;
            if next() % 2 == 0 {
                let max_hours = match r.schedule_expression.as_deref() {
                    Some("rate(4 hours)") => 4,
                    Some("rate(13 hours)") => 13,
                    _ => 24,
                };
                r.duration = Some(format!("{}h", 1 + next() % max_hours));
            }
            let s = Schedule::parse(&r).unwrap().unwrap();
            let last = JAN_1_2026 + (next() % (400 * DAY_MS as u64)) as Timestamp;
            let now = last + (next() % (40 * DAY_MS as u64)) as Timestamp;
            let blackouts: Vec<Blackout> = (0..next() % 3)
                .filter_map(|_| {
                    let start = (next() % 1440) as u16;
                    let len = 1 + (next() % 180) as u16;
                    Blackout::parse(
                        &Blackout {
                            start_minute: start,
                            end_minute: (start + len) % 1440,
                        }
                        .to_string(),
                    )
                })
                .collect();
            let Some(n) = s.next_rotation(last, now, &blackouts, next()) else {
                continue;
            };
            assert!(n.window_start <= n.at && n.at < n.window_end, "{r:?} {n:?}");
            assert!(n.at >= now, "{r:?} {n:?} now {now}");
            assert!(
                !blackouts.iter().any(|b| b.contains(n.at)),
                "{r:?} {n:?} {blackouts:?}"
            );
            checked += 1;
        }
        assert!(checked > 2_500, "only {checked} cases produced a rotation");
    }
}
