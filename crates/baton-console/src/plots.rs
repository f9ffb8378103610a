//! Server-rendered plots: coordinates are computed here, and the templates draw them as SVG
//! (their text escaped like any other). Each plot carries its values as text too, so it is
//! readable without colour, and without the picture.

use baton_proto as p;

/// Plot area, in SVG user units.
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 160.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 24.0;

/// One line of a plot: a step function through `points` (SVG `points` syntax).
pub(crate) struct Series {
    /// The CSS class: each series has its own dash pattern, not only its own colour.
    pub class: &'static str,
    pub name: &'static str,
    pub points: String,
    /// The last value, as text.
    pub last: String,
}

/// The fraction of reporting consumers that hold what each gate needs, over the rotation.
pub(crate) struct Propagation {
    pub width: f64,
    pub height: f64,
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
    pub series: Vec<Series>,
    pub start: String,
    pub end: String,
}

/// The fraction a gate's waiting entry records: "L of R reporting consumer(s) do not hold…".
fn fraction_of(reason: &str) -> Option<f64> {
    let mut words = reason.split_whitespace();
    let lagging: f64 = words.next()?.parse().ok()?;
    (words.next()? == "of").then_some(())?;
    let reporting: f64 = words.next()?.parse().ok()?;
    (reporting > 0.0).then(|| (reporting - lagging) / reporting)
}

/// The propagation plot of a rotation: one series per gate that has waited, drawn from the
/// timeline's gate entries (the engine writes one each time the count of consumers holding
/// the gate changes) and, while a gate waits, from what consumers hold `now`.
pub(crate) fn propagation(
    timeline: &[p::TimelineEntry],
    live_now: Option<(&str, f64)>,
    now: f64,
    date: impl Fn(f64) -> String,
) -> Option<Propagation> {
    let start = timeline.first()?.date?;
    let mut gates: Vec<(&'static str, Vec<(f64, f64)>)> =
        vec![("propagation", Vec::new()), ("drain", Vec::new())];
    for entry in timeline {
        let (Some(t), Some(event)) = (entry.date, entry.event.as_deref()) else {
            continue;
        };
        for (gate, points) in gates.iter_mut() {
            if let Some(reason) = event.strip_prefix(&format!("{gate} gate waiting: ")) {
                if let Some(f) = fraction_of(reason) {
                    points.push((t, f));
                }
            } else if event == format!("{gate} gate passed") {
                points.push((t, 1.0));
            }
        }
    }
    if let Some((gate, f)) = live_now
        && let Some((_, points)) = gates.iter_mut().find(|(g, _)| *g == gate)
    {
        points.push((now, f));
    }
    gates.retain(|(_, points)| !points.is_empty());
    if gates.is_empty() {
        return None;
    }
    let end = gates
        .iter()
        .flat_map(|(_, points)| points.iter().map(|(t, _)| *t))
        .fold(start, f64::max);
    let span = (end - start).max(1.0);
    let x = |t: f64| LEFT + (t - start) / span * (WIDTH - LEFT - RIGHT);
    let y = |f: f64| TOP + (1.0 - f.clamp(0.0, 1.0)) * (HEIGHT - TOP - BOTTOM);
    let series = gates
        .into_iter()
        .map(|(gate, points)| {
            let mut path = Vec::new();
            let mut previous: Option<f64> = None;
            for &(t, f) in &points {
                if let Some(before) = previous {
                    path.push(format!("{:.1},{:.1}", x(t), y(before)));
                }
                path.push(format!("{:.1},{:.1}", x(t), y(f)));
                previous = Some(f);
            }
            let last = points.last().map(|(_, f)| *f).unwrap_or_default();
            Series {
                class: if gate == "drain" {
                    "series drain"
                } else {
                    "series"
                },
                name: if gate == "drain" {
                    "use the new version (drain gate)"
                } else {
                    "accept the new version (propagation gate)"
                },
                points: path.join(" "),
                last: format!("{:.0}%", last * 100.0),
            }
        })
        .collect();
    Some(Propagation {
        width: WIDTH,
        height: HEIGHT,
        left: LEFT,
        right: WIDTH - RIGHT,
        top: TOP,
        bottom: HEIGHT - BOTTOM,
        series,
        start: date(start),
        end: date(end),
    })
}

/// One earlier rotation on the history's bar chart.
pub(crate) struct Bar {
    pub y: f64,
    pub width: f64,
    pub failed: bool,
    pub label: String,
}

pub(crate) struct History {
    pub width: f64,
    pub height: f64,
    pub left: f64,
    pub bars: Vec<Bar>,
}

/// Each rotation's duration, from its start to its last timeline entry (or `now` while it
/// runs): one bar each, newest first, labelled with the start, the status and the duration.
pub(crate) fn history(
    rotations: &[p::RotationSummary],
    now: f64,
    date: impl Fn(f64) -> String,
    duration: impl Fn(f64) -> String,
) -> Option<History> {
    const ROW: f64 = 22.0;
    const LABEL: f64 = 300.0;
    let rows: Vec<(String, f64, bool)> = rotations
        .iter()
        .filter_map(|r| {
            let started = r.started_date?;
            let status = r.status.clone().unwrap_or_default();
            let ended = if status == "InProgress" || status == "Stopped" {
                now
            } else {
                r.timeline
                    .iter()
                    .flatten()
                    .filter_map(|e| e.date)
                    .fold(started, f64::max)
            };
            let seconds = (ended - started).max(0.0);
            let failed = status == "Stopped" || status == "Cancelled";
            Some((
                format!("{} {status}, {}", date(started), duration(seconds)),
                seconds,
                failed,
            ))
        })
        .collect();
    if rows.is_empty() {
        return None;
    }
    let longest = rows.iter().map(|r| r.1).fold(1.0, f64::max);
    let bars = rows
        .into_iter()
        .enumerate()
        .map(|(i, (label, seconds, failed))| Bar {
            y: 4.0 + i as f64 * ROW,
            width: (seconds / longest * (WIDTH - LABEL - RIGHT)).max(1.0),
            failed,
            label,
        })
        .collect::<Vec<_>>();
    Some(History {
        width: WIDTH,
        height: 8.0 + bars.len() as f64 * ROW,
        left: LABEL,
        bars,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(t: f64, event: &str) -> p::TimelineEntry {
        p::TimelineEntry {
            date: Some(t),
            event: Some(event.into()),
        }
    }

    #[test]
    fn the_propagation_series_steps_through_each_recorded_count_and_the_live_one() {
        let timeline = [
            entry(0.0, "phase started"),
            entry(
                10.0,
                "propagation gate waiting: 3 of 3 reporting consumer(s) do not hold",
            ),
            entry(
                20.0,
                "propagation gate waiting: 1 of 3 reporting consumer(s) do not hold",
            ),
        ];
        let plot = propagation(&timeline, Some(("propagation", 1.0)), 40.0, |t| {
            t.to_string()
        })
        .unwrap();
        assert_eq!(plot.series.len(), 1);
        let s = &plot.series[0];
        assert_eq!(s.last, "100%");
        // x maps 0..40 s onto 44..628; y maps 1..0 onto 10..136.
        assert_eq!(
            s.points,
            "190.0,136.0 336.0,136.0 336.0,52.0 628.0,52.0 628.0,10.0"
        );
    }

    #[test]
    fn a_forced_gate_does_not_draw_the_consumers_as_caught_up() {
        let timeline = [
            entry(
                0.0,
                "drain gate waiting: 2 of 2 reporting consumer(s) do not hold",
            ),
            entry(5.0, "drain gate passed (forced)"),
        ];
        let plot = propagation(&timeline, None, 9.0, |t| t.to_string()).unwrap();
        assert_eq!(plot.series[0].last, "0%");
        assert_eq!(plot.series[0].class, "series drain");
    }

    #[test]
    fn a_rotation_without_a_gate_count_has_no_plot() {
        let timeline = [entry(0.0, "phase started"), entry(1.0, "phase created")];
        assert!(propagation(&timeline, None, 2.0, |t| t.to_string()).is_none());
    }

    #[test]
    fn history_bars_are_proportional_to_durations() {
        let summary = |started: f64, end: f64, status: &str| p::RotationSummary {
            started_date: Some(started),
            status: Some(status.into()),
            timeline: Some(vec![entry(end, "phase retired")]),
            ..Default::default()
        };
        let h = history(
            &[
                summary(0.0, 100.0, "Succeeded"),
                summary(0.0, 50.0, "Cancelled"),
            ],
            1_000.0,
            |t| t.to_string(),
            |s| format!("{s} s"),
        )
        .unwrap();
        assert_eq!(h.bars.len(), 2);
        assert!((h.bars[0].width - 2.0 * h.bars[1].width).abs() < 1e-9);
        assert!(!h.bars[0].failed && h.bars[1].failed);
        assert_eq!(h.bars[1].label, "0 Cancelled, 50 s");
    }
}
