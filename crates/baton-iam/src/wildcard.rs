//! `*` and `?` matching, as IAM uses for actions, resources and `StringLike`.

/// Whether `text` matches `pattern`, where `*` matches any run of characters (also none) and
/// `?` exactly one. Linear backtracking: the cost is at most `pattern × text`. ASCII input (the
/// usual ARN and action) is matched in place; other text by `char`, after case folding.
pub fn wildcard_match(pattern: &str, text: &str, ignore_case: bool) -> bool {
    if pattern.is_ascii() && text.is_ascii() {
        let same = |p: &u8, t: &u8| {
            if ignore_case {
                p.eq_ignore_ascii_case(t)
            } else {
                p == t
            }
        };
        return match_units(pattern.as_bytes(), text.as_bytes(), b'*', b'?', same);
    }
    let fold = |s: &str| -> Vec<char> {
        if ignore_case {
            s.to_lowercase().chars().collect()
        } else {
            s.chars().collect()
        }
    };
    match_units(&fold(pattern), &fold(text), '*', '?', |p, t| p == t)
}

fn match_units<T: PartialEq>(
    p: &[T],
    t: &[T],
    star_unit: T,
    any_unit: T,
    same: impl Fn(&T, &T) -> bool,
) -> bool {
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and how much text it has swallowed so far.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == any_unit || (p[pi] != star_unit && same(&p[pi], &t[ti]))) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == star_unit {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((star_pi, star_ti)) = star {
            pi = star_pi + 1;
            ti = star_ti + 1;
            star = Some((star_pi, star_ti + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == star_unit)
}
