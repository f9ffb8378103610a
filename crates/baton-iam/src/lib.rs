//! The IAM policy language as Baton enforces it: documents are parsed once into [`Policy`],
//! with findings that name each problem, and [`evaluate`] decides a request the way AWS's
//! documented logic does within one account:
//!
//! 1. an applicable `Deny` in any policy wins;
//! 2. a session policy, when there is one, must allow the request;
//! 3. otherwise an applicable `Allow` in an identity policy or in the resource policy allows it;
//! 4. anything else is an implicit deny.
//!
//! No I/O and no clock: `aws:CurrentTime` and every other condition key arrive in the
//! [`Context`] the server builds.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;

mod wildcard;
pub use wildcard::wildcard_match;

/// The longest policy document Baton accepts (AWS's limit for a resource policy).
pub const POLICY_CHARS_MAX: usize = 20_480;

/// Where a policy is attached, which decides whether it names a principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// Attached to a principal: it has no `Principal` element.
    Identity,
    /// Attached to a secret or key: each statement names its principals.
    Resource,
}

/// One problem or risk found in a policy document, in ValidateResourcePolicy's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `SYNTAX_CHECK` for an invalid document, `BROAD_ACCESS_CHECK` for a risky one.
    pub check_name: &'static str,
    pub message: String,
}

/// Why a document could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyError {
    /// Not a JSON policy document at all.
    Malformed(String),
    /// A JSON object with statements Baton cannot enforce as written.
    Invalid(Vec<Finding>),
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicyError::Malformed(m) => f.write_str(m),
            PolicyError::Invalid(findings) => {
                let messages: Vec<&str> = findings.iter().map(|x| x.message.as_str()).collect();
                f.write_str(&messages.join(" "))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// A list of patterns, or (for `NotAction`, `NotResource`, `NotPrincipal`) its complement.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Patterns {
    items: Vec<String>,
    negated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PrincipalItem {
    /// `"*"` or `{"AWS": "*"}`: everyone.
    Anyone,
    /// An account, as an id or `arn:aws:iam::<id>:root`: in a Deny it covers every principal of
    /// the account; in an Allow it delegates to identity policies and grants nothing alone.
    Account(String),
    /// One principal's ARN.
    Arn(String),
    /// A service, federated or canonical-user principal: never a Baton caller.
    Foreign,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Principals {
    items: Vec<PrincipalItem>,
    negated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetQualifier {
    None,
    ForAnyValue,
    ForAllValues,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Base {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    NumericEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    DateEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    Bool,
    IpAddress,
    ArnLike,
    Null,
}

/// One `operator: {key: values}` pair of a Condition block.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Condition {
    base: Base,
    negated: bool,
    if_exists: bool,
    set: SetQualifier,
    /// Lower-cased: condition key names are case-insensitive.
    key: String,
    values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    sid: Option<String>,
    effect: Effect,
    actions: Patterns,
    resources: Patterns,
    principals: Option<Principals>,
    conditions: Vec<Condition>,
}

/// A parsed policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    statements: Vec<Statement>,
}

/// The values of condition keys for one request. Key names are case-insensitive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    values: BTreeMap<String, Vec<String>>,
}

impl Context {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a key to one value, replacing what it had.
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.values
            .insert(key.to_ascii_lowercase(), vec![value.into()]);
        self
    }

    /// Sets `aws:CurrentTime` and `aws:EpochTime` from milliseconds since the epoch.
    pub fn set_time(&mut self, now_ms: i64) -> &mut Self {
        let text = jiff::Timestamp::from_millisecond(now_ms)
            .map(|t| t.to_string())
            .unwrap_or_default();
        self.set("aws:CurrentTime", text);
        self.set("aws:EpochTime", (now_ms / 1000).to_string())
    }

    fn get(&self, key: &str) -> Option<&[String]> {
        self.values.get(key).map(Vec::as_slice)
    }
}

/// What is being asked.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The caller's ARN (`arn:aws:iam::123456789012:user/alice`).
    pub principal_arn: &'a str,
    /// The caller's account id.
    pub account_id: &'a str,
    /// `service:Operation`, as in `secretsmanager:GetSecretValue`.
    pub action: &'a str,
    /// The resource's ARN, or `*` for an operation that acts on no one resource.
    pub resource: &'a str,
    pub context: &'a Context,
}

/// The policies that bear on a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct PolicySet<'a> {
    /// The caller's identity policies, each with its name.
    pub identity: &'a [(String, Policy)],
    /// The resource policy of the secret or key acted on.
    pub resource: Option<&'a Policy>,
    /// Limits temporary credentials: the request must also be allowed here.
    pub session: Option<&'a Policy>,
}

/// Which kind of policy decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An identity policy, by name.
    Identity(String),
    Resource,
    Session,
}

impl Source {
    /// How AWS's error messages name the kind of policy, with its article.
    pub fn kind_phrase(&self) -> &'static str {
        match self {
            Source::Identity(_) => "an identity-based policy",
            Source::Resource => "a resource-based policy",
            Source::Session => "a session policy",
        }
    }
}

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, by an Allow in this policy.
    Allow(Source),
    /// A Deny statement in this policy applied.
    ExplicitDeny { source: Source, sid: Option<String> },
    /// No policy allowed the request (`Session` when only the session policy failed to).
    ImplicitDeny { missing: Source },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

fn as_list(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

/// A condition value as text: strings as they are, booleans and numbers as JSON writes them.
fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn parse_operator(name: &str) -> Option<(Base, bool, bool, SetQualifier)> {
    let (set, rest) = if let Some(rest) = name.strip_prefix("ForAnyValue:") {
        (SetQualifier::ForAnyValue, rest)
    } else if let Some(rest) = name.strip_prefix("ForAllValues:") {
        (SetQualifier::ForAllValues, rest)
    } else {
        (SetQualifier::None, name)
    };
    let (rest, if_exists) = match rest.strip_suffix("IfExists") {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let (base, negated) = match rest {
        "StringEquals" => (Base::StringEquals, false),
        "StringNotEquals" => (Base::StringEquals, true),
        "StringEqualsIgnoreCase" => (Base::StringEqualsIgnoreCase, false),
        "StringNotEqualsIgnoreCase" => (Base::StringEqualsIgnoreCase, true),
        "StringLike" => (Base::StringLike, false),
        "StringNotLike" => (Base::StringLike, true),
        "NumericEquals" => (Base::NumericEquals, false),
        "NumericNotEquals" => (Base::NumericEquals, true),
        "NumericLessThan" => (Base::NumericLessThan, false),
        "NumericLessThanEquals" => (Base::NumericLessThanEquals, false),
        "NumericGreaterThan" => (Base::NumericGreaterThan, false),
        "NumericGreaterThanEquals" => (Base::NumericGreaterThanEquals, false),
        "DateEquals" => (Base::DateEquals, false),
        "DateNotEquals" => (Base::DateEquals, true),
        "DateLessThan" => (Base::DateLessThan, false),
        "DateLessThanEquals" => (Base::DateLessThanEquals, false),
        "DateGreaterThan" => (Base::DateGreaterThan, false),
        "DateGreaterThanEquals" => (Base::DateGreaterThanEquals, false),
        "Bool" => (Base::Bool, false),
        "IpAddress" => (Base::IpAddress, false),
        "NotIpAddress" => (Base::IpAddress, true),
        "ArnEquals" | "ArnLike" => (Base::ArnLike, false),
        "ArnNotEquals" | "ArnNotLike" => (Base::ArnLike, true),
        "Null" if !if_exists && set == SetQualifier::None => (Base::Null, false),
        _ => return None,
    };
    Some((base, negated, if_exists, set))
}

/// A date in a policy or context: ISO 8601 with an offset, a plain date (midnight UTC), or
/// seconds since the epoch. Milliseconds since the epoch.
fn parse_date(text: &str) -> Option<i64> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Some(t.as_millisecond());
    }
    if let Ok(d) = text.parse::<jiff::civil::Date>() {
        return d
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp().as_millisecond());
    }
    text.parse::<i64>().ok().map(|s| s.saturating_mul(1000))
}

/// An address range: `10.0.0.0/8`, `2001:db8::/32`, or one address.
fn parse_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = match text.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (text, None),
    };
    let addr: IpAddr = addr.trim().parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        Some(b) => b.trim().parse::<u8>().ok().filter(|b| *b <= max)?,
        None => max,
    };
    Some((addr, bits))
}

fn in_cidr(ip: IpAddr, (net, bits): (IpAddr, u8)) -> bool {
    let (a, b, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    if bits == 0 {
        return true;
    }
    let shift = width - u32::from(bits);
    (a >> shift) == (b >> shift)
}

fn check_condition_value(base: Base, value: &str) -> Result<(), String> {
    let ok = match base {
        Base::NumericEquals
        | Base::NumericLessThan
        | Base::NumericLessThanEquals
        | Base::NumericGreaterThan
        | Base::NumericGreaterThanEquals => value.parse::<f64>().is_ok(),
        Base::DateEquals
        | Base::DateLessThan
        | Base::DateLessThanEquals
        | Base::DateGreaterThan
        | Base::DateGreaterThanEquals => parse_date(value).is_some(),
        Base::Bool | Base::Null => {
            value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false")
        }
        Base::IpAddress => parse_cidr(value).is_some(),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{value}' is not a valid value for a {base:?} condition"
        ))
    }
}

fn principal_item(text: &str) -> Option<PrincipalItem> {
    if text == "*" {
        Some(PrincipalItem::Anyone)
    } else if text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit()) {
        Some(PrincipalItem::Account(text.to_owned()))
    } else if let Some(account) = text
        .strip_prefix("arn:aws:iam::")
        .and_then(|rest| rest.strip_suffix(":root"))
    {
        Some(PrincipalItem::Account(account.to_owned()))
    } else if text.starts_with("arn:") {
        Some(PrincipalItem::Arn(text.to_owned()))
    } else {
        None
    }
}

fn parse_principals(value: &Value, i: usize, findings: &mut Vec<Finding>) -> Vec<PrincipalItem> {
    let mut items = Vec::new();
    match value {
        Value::String(s) if s == "*" => items.push(PrincipalItem::Anyone),
        Value::Object(map) => {
            for (kind, names) in map {
                for name in as_list(names) {
                    match (kind.as_str(), name.as_str()) {
                        ("AWS", Some(text)) => match principal_item(text) {
                            Some(item) => items.push(item),
                            None => findings.push(syntax(format!(
                                "Statement {i}: principal '{text}' is not \"*\", an account id \
                                 or an ARN."
                            ))),
                        },
                        (_, Some(_)) => items.push(PrincipalItem::Foreign),
                        (_, None) => findings.push(syntax(format!(
                            "Statement {i}: principals must be strings."
                        ))),
                    }
                }
            }
        }
        _ => findings.push(syntax(format!(
            "Statement {i}: Principal must be \"*\" or an object such as {{\"AWS\": \"<arn>\"}}."
        ))),
    }
    items
}

fn syntax(message: String) -> Finding {
    Finding {
        check_name: "SYNTAX_CHECK",
        message,
    }
}

const STATEMENT_KEYS: &[&str] = &[
    "Sid",
    "Effect",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Principal",
    "NotPrincipal",
    "Condition",
];

fn parse_statement(
    st: &serde_json::Map<String, Value>,
    i: usize,
    kind: PolicyKind,
    findings: &mut Vec<Finding>,
) -> Option<Statement> {
    let before = findings.len();
    for key in st.keys() {
        if !STATEMENT_KEYS.contains(&key.as_str()) {
            findings.push(syntax(format!(
                "Statement {i}: '{key}' is not a statement element."
            )));
        }
    }
    let effect = match st.get("Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        _ => {
            findings.push(syntax(format!(
                "Statement {i}: Effect must be \"Allow\" or \"Deny\"."
            )));
            Effect::Deny
        }
    };
    let mut patterns = |positive: &str, negative: &str, check: &dyn Fn(&str) -> Option<String>| {
        let (value, negated) = match (st.get(positive), st.get(negative)) {
            (Some(v), None) => (v, false),
            (None, Some(v)) => (v, true),
            (Some(_), Some(_)) => {
                findings.push(syntax(format!(
                    "Statement {i}: use {positive} or {negative}, not both."
                )));
                return None;
            }
            (None, None) => {
                findings.push(syntax(format!(
                    "Statement {i}: {positive} or {negative} is required."
                )));
                return None;
            }
        };
        let mut items = Vec::new();
        for item in as_list(value) {
            match item.as_str() {
                Some(text) => match check(text) {
                    None => items.push(text.to_owned()),
                    Some(problem) => findings.push(syntax(format!("Statement {i}: {problem}"))),
                },
                None => findings.push(syntax(format!(
                    "Statement {i}: each {positive} must be a string."
                ))),
            }
        }
        if items.is_empty() && !value.is_array() {
            return None;
        }
        Some(Patterns { items, negated })
    };
    let actions = patterns("Action", "NotAction", &|a| {
        let valid = a == "*"
            || a.split_once(':').is_some_and(|(service, op)| {
                !service.is_empty()
                    && service
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !op.is_empty()
            });
        (!valid).then(|| format!("action '{a}' is not \"*\" or service:Operation."))
    });
    let resources = patterns("Resource", "NotResource", &|r| {
        (r != "*" && !r.starts_with("arn:"))
            .then(|| format!("resource '{r}' is not \"*\" or an ARN."))
    });
    let principals = match (kind, st.get("Principal"), st.get("NotPrincipal")) {
        (PolicyKind::Identity, None, None) => None,
        (PolicyKind::Identity, _, _) => {
            findings.push(syntax(format!(
                "Statement {i}: an identity policy has no Principal; it applies to the principal \
                 it is attached to."
            )));
            None
        }
        (PolicyKind::Resource, Some(p), None) => Some(Principals {
            items: parse_principals(p, i, findings),
            negated: false,
        }),
        (PolicyKind::Resource, None, Some(p)) => {
            if effect == Effect::Allow {
                findings.push(syntax(format!(
                    "Statement {i}: NotPrincipal is supported with \"Deny\" only; an Allow for \
                     everyone but a few is too easy to get wrong. Name the principals instead."
                )));
            }
            Some(Principals {
                items: parse_principals(p, i, findings),
                negated: true,
            })
        }
        (PolicyKind::Resource, Some(_), Some(_)) => {
            findings.push(syntax(format!(
                "Statement {i}: use Principal or NotPrincipal, not both."
            )));
            None
        }
        (PolicyKind::Resource, None, None) => {
            findings.push(syntax(format!(
                "Statement {i}: a resource policy statement must name a Principal."
            )));
            None
        }
    };
    let mut conditions = Vec::new();
    match st.get("Condition") {
        None => {}
        Some(Value::Object(block)) => {
            for (operator, keys) in block {
                let Some((base, negated, if_exists, set)) = parse_operator(operator) else {
                    findings.push(syntax(format!(
                        "Statement {i}: '{operator}' is not a condition operator Baton supports."
                    )));
                    continue;
                };
                let Some(keys) = keys.as_object() else {
                    findings.push(syntax(format!(
                        "Statement {i}: {operator} must map condition keys to values."
                    )));
                    continue;
                };
                for (key, values) in keys {
                    let mut texts = Vec::new();
                    for v in as_list(values) {
                        match value_text(v) {
                            Some(t) => match check_condition_value(base, &t) {
                                Ok(()) => texts.push(t),
                                Err(problem) => findings
                                    .push(syntax(format!("Statement {i}: {key}: {problem}."))),
                            },
                            None => findings.push(syntax(format!(
                                "Statement {i}: {key}: condition values must be strings, \
                                 numbers or booleans."
                            ))),
                        }
                    }
                    conditions.push(Condition {
                        base,
                        negated,
                        if_exists,
                        set,
                        key: key.to_ascii_lowercase(),
                        values: texts,
                    });
                }
            }
        }
        Some(_) => findings.push(syntax(format!(
            "Statement {i}: Condition must be an object."
        ))),
    }
    let sid = match st.get("Sid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            findings.push(syntax(format!("Statement {i}: Sid must be a string.")));
            None
        }
    };
    if findings.len() > before {
        return None;
    }
    Some(Statement {
        sid,
        effect,
        actions: actions?,
        resources: resources?,
        principals,
        conditions,
    })
}

impl Policy {
    /// Parses a policy document. Every problem is reported, not only the first.
    pub fn parse(text: &str, kind: PolicyKind) -> Result<Policy, PolicyError> {
        if text.len() > POLICY_CHARS_MAX {
            return Err(PolicyError::Malformed(format!(
                "The policy is {} characters long; the limit is {POLICY_CHARS_MAX}.",
                text.len()
            )));
        }
        let doc: Value = serde_json::from_str(text)
            .map_err(|e| PolicyError::Malformed(format!("The policy is not valid JSON: {e}.")))?;
        let Some(object) = doc.as_object() else {
            return Err(PolicyError::Malformed(
                "The policy must be a JSON object.".to_owned(),
            ));
        };
        let mut findings = Vec::new();
        for key in object.keys() {
            if !["Version", "Id", "Statement"].contains(&key.as_str()) {
                findings.push(syntax(format!("'{key}' is not a policy element.")));
            }
        }
        match object.get("Version").and_then(Value::as_str) {
            Some("2012-10-17") | Some("2008-10-17") => {}
            Some(other) => findings.push(syntax(format!(
                "Version '{other}' is not a policy language version; use \"2012-10-17\"."
            ))),
            None => findings.push(syntax(
                "The policy has no Version; use \"2012-10-17\".".to_owned(),
            )),
        }
        let mut statements = Vec::new();
        match object.get("Statement") {
            None => findings.push(syntax("The policy has no Statement.".to_owned())),
            Some(list) => {
                for (i, statement) in as_list(list).into_iter().enumerate() {
                    match statement.as_object() {
                        Some(st) => {
                            if let Some(s) = parse_statement(st, i, kind, &mut findings) {
                                statements.push(s);
                            }
                        }
                        None => findings.push(syntax(format!("Statement {i} is not an object."))),
                    }
                }
            }
        }
        if findings.is_empty() {
            Ok(Policy { statements })
        } else {
            Err(PolicyError::Invalid(findings))
        }
    }

    /// Risks in a valid resource policy: an Allow for everyone without a condition.
    pub fn broad_access_findings(&self) -> Vec<Finding> {
        self.statements
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.effect == Effect::Allow
                    && s.conditions.is_empty()
                    && s.principals
                        .as_ref()
                        .is_some_and(|p| p.negated || p.items.contains(&PrincipalItem::Anyone))
            })
            .map(|(i, _)| Finding {
                check_name: "BROAD_ACCESS_CHECK",
                message: format!(
                    "Statement {i} allows principal \"*\" without a Condition: any holder of a \
                     valid Baton access key could use it. Name the principals, or add a \
                     Condition."
                ),
            })
            .collect()
    }

    /// A policy that allows `actions` on `resources` and nothing else, as temporary credentials
    /// of a rotation carry.
    pub fn allowing(actions: &[&str], resources: &[&str]) -> Policy {
        Policy {
            statements: vec![Statement {
                sid: None,
                effect: Effect::Allow,
                actions: Patterns {
                    items: actions.iter().map(|s| (*s).to_owned()).collect(),
                    negated: false,
                },
                resources: Patterns {
                    items: resources.iter().map(|s| (*s).to_owned()).collect(),
                    negated: false,
                },
                principals: None,
                conditions: vec![],
            }],
        }
    }

    /// Adds the statements of `other`.
    pub fn extend(&mut self, other: Policy) {
        self.statements.extend(other.statements);
    }
}

fn patterns_match(p: &Patterns, text: &str, ignore_case: bool) -> bool {
    let any = p
        .items
        .iter()
        .any(|pat| wildcard_match(pat, text, ignore_case));
    any != p.negated
}

fn principals_match(p: &Principals, effect: Effect, req: &Request<'_>) -> bool {
    let named = p.items.iter().any(|item| match item {
        PrincipalItem::Anyone => true,
        PrincipalItem::Arn(arn) => arn == req.principal_arn,
        // Naming the account denies every principal in it, but allows none by itself.
        PrincipalItem::Account(account) => {
            account == req.account_id && (p.negated || effect == Effect::Deny)
        }
        PrincipalItem::Foreign => false,
    });
    named != p.negated
}

fn compare(base: Base, actual: &str, wanted: &str) -> bool {
    let numbers = || Some((actual.parse::<f64>().ok()?, wanted.parse::<f64>().ok()?));
    let dates = || Some((parse_date(actual)?, parse_date(wanted)?));
    match base {
        Base::StringEquals => actual == wanted,
        Base::StringEqualsIgnoreCase => actual.to_lowercase() == wanted.to_lowercase(),
        Base::StringLike | Base::ArnLike => wildcard_match(wanted, actual, false),
        Base::NumericEquals => numbers().is_some_and(|(a, w)| a == w),
        Base::NumericLessThan => numbers().is_some_and(|(a, w)| a < w),
        Base::NumericLessThanEquals => numbers().is_some_and(|(a, w)| a <= w),
        Base::NumericGreaterThan => numbers().is_some_and(|(a, w)| a > w),
        Base::NumericGreaterThanEquals => numbers().is_some_and(|(a, w)| a >= w),
        Base::DateEquals => dates().is_some_and(|(a, w)| a == w),
        Base::DateLessThan => dates().is_some_and(|(a, w)| a < w),
        Base::DateLessThanEquals => dates().is_some_and(|(a, w)| a <= w),
        Base::DateGreaterThan => dates().is_some_and(|(a, w)| a > w),
        Base::DateGreaterThanEquals => dates().is_some_and(|(a, w)| a >= w),
        Base::Bool => actual.eq_ignore_ascii_case(wanted),
        Base::IpAddress => match (actual.parse::<IpAddr>(), parse_cidr(wanted)) {
            (Ok(ip), Some(net)) => in_cidr(ip, net),
            _ => false,
        },
        Base::Null => false,
    }
}

fn condition_holds(c: &Condition, ctx: &Context) -> bool {
    let present = ctx.get(&c.key);
    if c.base == Base::Null {
        let want_absent = c.values.iter().any(|v| v.eq_ignore_ascii_case("true"));
        return present.is_none() == want_absent;
    }
    let Some(actual) = present else {
        // An absent key matches nothing: a positive test fails, a negated one holds.
        return match c.set {
            SetQualifier::ForAllValues => true,
            SetQualifier::ForAnyValue => false,
            SetQualifier::None => c.if_exists || c.negated,
        };
    };
    let matches_any = |v: &String| c.values.iter().any(|w| compare(c.base, v, w));
    match (c.set, c.negated) {
        (SetQualifier::None, false) | (SetQualifier::ForAnyValue, false) => {
            actual.iter().any(matches_any)
        }
        (SetQualifier::None, true) => !actual.iter().any(matches_any),
        (SetQualifier::ForAnyValue, true) => actual.iter().any(|v| !matches_any(v)),
        (SetQualifier::ForAllValues, false) => actual.iter().all(matches_any),
        (SetQualifier::ForAllValues, true) => actual.iter().all(|v| !matches_any(v)),
    }
}

fn applies(s: &Statement, req: &Request<'_>) -> bool {
    patterns_match(&s.actions, req.action, true)
        && patterns_match(&s.resources, req.resource, false)
        && s.principals
            .as_ref()
            .is_none_or(|p| principals_match(p, s.effect, req))
        && s.conditions.iter().all(|c| condition_holds(c, req.context))
}

/// The first applicable statement with this effect.
fn find(policy: &Policy, effect: Effect, req: &Request<'_>) -> Option<Option<String>> {
    policy
        .statements
        .iter()
        .find(|s| s.effect == effect && applies(s, req))
        .map(|s| s.sid.clone())
}

/// Decides a request; see the crate's documentation for the order of the rules.
pub fn evaluate(policies: PolicySet<'_>, req: &Request<'_>) -> Decision {
    let sources = policies
        .identity
        .iter()
        .map(|(name, p)| (Source::Identity(name.clone()), p))
        .chain(policies.resource.map(|p| (Source::Resource, p)))
        .chain(policies.session.map(|p| (Source::Session, p)));
    let mut allowed_by = None;
    for (source, policy) in sources {
        if let Some(sid) = find(policy, Effect::Deny, req) {
            return Decision::ExplicitDeny { source, sid };
        }
        if allowed_by.is_none()
            && source != Source::Session
            && find(policy, Effect::Allow, req).is_some()
        {
            allowed_by = Some(source);
        }
    }
    if let Some(session) = policies.session
        && find(session, Effect::Allow, req).is_none()
    {
        return Decision::ImplicitDeny {
            missing: Source::Session,
        };
    }
    match allowed_by {
        Some(source) => Decision::Allow(source),
        None => Decision::ImplicitDeny {
            missing: Source::Identity(String::new()),
        },
    }
}

#[cfg(test)]
mod tests;
