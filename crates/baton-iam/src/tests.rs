use super::*;
use proptest::prelude::*;
use serde_json::json;

const ACCOUNT: &str = "111122223333";
const ALICE: &str = "arn:aws:iam::111122223333:user/alice";
const PROD_DB: &str = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-AbCdEf";
const DEV_APP: &str = "arn:aws:secretsmanager:us-east-1:111122223333:secret:dev/app-XyZ123";

fn identity(doc: Value) -> Policy {
    Policy::parse(&doc.to_string(), PolicyKind::Identity).unwrap()
}

fn resource(doc: Value) -> Policy {
    Policy::parse(&doc.to_string(), PolicyKind::Resource).unwrap()
}

fn ask(policies: PolicySet<'_>, action: &str, resource: &str, ctx: &Context) -> Decision {
    evaluate(
        policies,
        &Request {
            principal_arn: ALICE,
            account_id: ACCOUNT,
            action,
            resource,
            context: ctx,
        },
    )
}

#[test]
fn wildcards_match_runs_and_single_characters() {
    assert!(wildcard_match(
        "secretsmanager:Get*",
        "secretsmanager:GetSecretValue",
        false
    ));
    assert!(wildcard_match("*", "", false));
    assert!(wildcard_match("a*b*c", "aXXbYYc", false));
    assert!(!wildcard_match("a*b*c", "aXXbYY", false));
    assert!(wildcard_match("db-??????", "db-AbCdEf", false));
    assert!(!wildcard_match("db-??????", "db-AbCdE", false));
    assert!(wildcard_match(
        "SECRETSMANAGER:get*",
        "secretsmanager:GetSecretValue",
        true
    ));
    assert!(!wildcard_match("prod/*", "PROD/db", false));
    assert!(wildcard_match("*é?", "café!", false));
}

#[test]
fn an_allow_grants_only_its_actions_and_resources() {
    let p = vec![(
        "read-prod".to_owned(),
        identity(
            json!({"Version":"2012-10-17","Statement":[{"Effect":"Allow",
            "Action":["secretsmanager:GetSecretValue","secretsmanager:Describe*"],
            "Resource":"arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/*"}]}),
        ),
    )];
    let set = PolicySet {
        identity: &p,
        ..Default::default()
    };
    let ctx = Context::new();
    assert_eq!(
        ask(set, "secretsmanager:GetSecretValue", PROD_DB, &ctx),
        Decision::Allow(Source::Identity("read-prod".into()))
    );
    assert!(ask(set, "secretsmanager:describesecret", PROD_DB, &ctx).is_allowed());
    assert!(!ask(set, "secretsmanager:PutSecretValue", PROD_DB, &ctx).is_allowed());
    assert!(!ask(set, "secretsmanager:GetSecretValue", DEV_APP, &ctx).is_allowed());
}

#[test]
fn an_explicit_deny_wins_over_any_allow() {
    let p = vec![
        (
            "all".to_owned(),
            identity(
                json!({"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}),
            ),
        ),
        (
            "no-prod".to_owned(),
            identity(
                json!({"Version":"2012-10-17","Statement":{"Sid":"NoProd","Effect":"Deny",
                "Action":"secretsmanager:*","Resource":"arn:aws:secretsmanager:*:*:secret:prod/*"}}),
            ),
        ),
    ];
    let set = PolicySet {
        identity: &p,
        ..Default::default()
    };
    let ctx = Context::new();
    assert_eq!(
        ask(set, "secretsmanager:GetSecretValue", PROD_DB, &ctx),
        Decision::ExplicitDeny {
            source: Source::Identity("no-prod".into()),
            sid: Some("NoProd".into())
        }
    );
    assert!(ask(set, "secretsmanager:GetSecretValue", DEV_APP, &ctx).is_allowed());
}

#[test]
fn a_resource_policy_allows_a_named_principal_but_not_by_naming_the_account() {
    let named = resource(json!({"Version":"2012-10-17","Statement":{"Effect":"Allow",
        "Principal":{"AWS":ALICE},"Action":"secretsmanager:GetSecretValue","Resource":"*"}}));
    let account = resource(json!({"Version":"2012-10-17","Statement":{"Effect":"Allow",
        "Principal":{"AWS":ACCOUNT},"Action":"secretsmanager:GetSecretValue","Resource":"*"}}));
    let deny_account = resource(json!({"Version":"2012-10-17","Statement":{"Effect":"Deny",
        "Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"*","Resource":"*"}}));
    let ctx = Context::new();
    let with = |p| PolicySet {
        resource: Some(p),
        ..Default::default()
    };
    assert_eq!(
        ask(with(&named), "secretsmanager:GetSecretValue", PROD_DB, &ctx),
        Decision::Allow(Source::Resource)
    );
    assert!(
        !ask(
            with(&account),
            "secretsmanager:GetSecretValue",
            PROD_DB,
            &ctx
        )
        .is_allowed()
    );
    assert!(matches!(
        ask(
            with(&deny_account),
            "secretsmanager:GetSecretValue",
            PROD_DB,
            &ctx
        ),
        Decision::ExplicitDeny {
            source: Source::Resource,
            ..
        }
    ));
}

#[test]
fn a_session_policy_limits_what_identity_policies_allow() {
    let p = vec![(
        "all".to_owned(),
        identity(
            json!({"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}),
        ),
    )];
    let session = Policy::allowing(&["secretsmanager:GetSecretValue"], &[PROD_DB]);
    let set = PolicySet {
        identity: &p,
        session: Some(&session),
        ..Default::default()
    };
    let ctx = Context::new();
    assert!(ask(set, "secretsmanager:GetSecretValue", PROD_DB, &ctx).is_allowed());
    assert_eq!(
        ask(set, "secretsmanager:GetSecretValue", DEV_APP, &ctx),
        Decision::ImplicitDeny {
            missing: Source::Session
        }
    );
}

#[test]
fn conditions_on_ip_time_tags_and_transport() {
    let p = vec![(
        "conditional".to_owned(),
        identity(
            json!({"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*",
            "Condition":{
                "IpAddress":{"aws:SourceIp":["10.0.0.0/8","2001:db8::/32"]},
                "DateLessThan":{"aws:CurrentTime":"2027-01-01T00:00:00Z"},
                "StringEquals":{"secretsmanager:ResourceTag/Team":"payments"},
                "Bool":{"aws:SecureTransport":true}}}}),
        ),
    )];
    let set = PolicySet {
        identity: &p,
        ..Default::default()
    };
    let mut ctx = Context::new();
    ctx.set("aws:SourceIp", "10.1.2.3")
        .set("secretsmanager:resourcetag/team", "payments")
        .set("aws:SecureTransport", "true")
        .set_time(1_800_000_000_000); // 2027-01-15
    assert!(!ask(set, "secretsmanager:GetSecretValue", PROD_DB, &ctx).is_allowed());
    ctx.set_time(1_790_000_000_000); // 2026-09
    assert!(ask(set, "secretsmanager:GetSecretValue", PROD_DB, &ctx).is_allowed());
    ctx.set("aws:SourceIp", "2001:db8::1");
    assert!(ask(set, "secretsmanager:GetSecretValue", PROD_DB, &ctx).is_allowed());
    ctx.set("aws:SourceIp", "192.168.1.1");
    assert!(!ask(set, "secretsmanager:GetSecretValue", PROD_DB, &ctx).is_allowed());
    ctx.set("aws:SourceIp", "10.1.2.3")
        .set("secretsmanager:ResourceTag/Team", "web");
    assert!(!ask(set, "secretsmanager:GetSecretValue", PROD_DB, &ctx).is_allowed());
}

#[test]
fn absent_keys_fail_positive_tests_and_pass_negated_ones() {
    let ctx = Context::new();
    let one = |cond: Value| {
        let p = vec![(
            "p".to_owned(),
            identity(
                json!({"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*",
                "Resource":"*","Condition":cond}}),
            ),
        )];
        ask(
            PolicySet {
                identity: &p,
                ..Default::default()
            },
            "secretsmanager:GetSecretValue",
            PROD_DB,
            &ctx,
        )
        .is_allowed()
    };
    assert!(!one(json!({"StringEquals":{"aws:ResourceTag/team":"x"}})));
    assert!(one(json!({"StringNotEquals":{"aws:ResourceTag/team":"x"}})));
    assert!(one(
        json!({"StringEqualsIfExists":{"aws:ResourceTag/team":"x"}})
    ));
    assert!(one(json!({"Null":{"aws:ResourceTag/team":"true"}})));
    assert!(!one(json!({"Null":{"aws:ResourceTag/team":"false"}})));
    assert!(one(
        json!({"ForAllValues:StringEquals":{"aws:TagKeys":"x"}})
    ));
    assert!(!one(
        json!({"ForAnyValue:StringEquals":{"aws:TagKeys":"x"}})
    ));
}

#[test]
fn negated_operators_with_several_values_hold_only_when_none_matches() {
    let p = vec![(
        "p".to_owned(),
        identity(
            json!({"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*",
            "Condition":{"StringNotEquals":{"aws:ResourceTag/env":["prod","staging"]}}}}),
        ),
    )];
    let set = PolicySet {
        identity: &p,
        ..Default::default()
    };
    let mut ctx = Context::new();
    ctx.set("aws:ResourceTag/env", "staging");
    assert!(!ask(set, "secretsmanager:GetSecretValue", PROD_DB, &ctx).is_allowed());
    ctx.set("aws:ResourceTag/env", "dev");
    assert!(ask(set, "secretsmanager:GetSecretValue", PROD_DB, &ctx).is_allowed());
}

#[test]
fn not_action_and_not_resource_are_complements() {
    let p = vec![(
        "p".to_owned(),
        identity(json!({"Version":"2012-10-17","Statement":{"Effect":"Allow",
            "NotAction":"secretsmanager:Delete*","NotResource":"arn:aws:secretsmanager:*:*:secret:prod/*"}})),
    )];
    let set = PolicySet {
        identity: &p,
        ..Default::default()
    };
    let ctx = Context::new();
    assert!(ask(set, "secretsmanager:GetSecretValue", DEV_APP, &ctx).is_allowed());
    assert!(!ask(set, "secretsmanager:DeleteSecret", DEV_APP, &ctx).is_allowed());
    assert!(!ask(set, "secretsmanager:GetSecretValue", PROD_DB, &ctx).is_allowed());
}

#[test]
fn invalid_documents_name_every_problem() {
    let err = Policy::parse(
        &json!({"Statement":[{"Effect":"Maybe","Action":"GetSecretValue","Resource":"prod/db",
            "Principal":"*","Condition":{"StringSorta":{"k":"v"},"IpAddress":{"aws:SourceIp":"10.0.0.0/99"}},
            "Extra":1}]})
        .to_string(),
        PolicyKind::Identity,
    )
    .unwrap_err();
    let PolicyError::Invalid(findings) = err else {
        panic!("expected findings, got {err:?}");
    };
    let all: String = findings.iter().map(|f| f.message.clone() + "\n").collect();
    for needle in [
        "no Version",
        "Effect",
        "'GetSecretValue' is not",
        "'prod/db' is not",
        "has no Principal",
        "StringSorta",
        "10.0.0.0/99",
        "'Extra'",
    ] {
        assert!(all.contains(needle), "{needle} missing from:\n{all}");
    }
    assert!(matches!(
        Policy::parse("{", PolicyKind::Identity),
        Err(PolicyError::Malformed(_))
    ));
    assert!(matches!(
        Policy::parse(&"x".repeat(POLICY_CHARS_MAX + 1), PolicyKind::Identity),
        Err(PolicyError::Malformed(_))
    ));
}

#[test]
fn broad_access_is_reported_for_unconditioned_public_allows() {
    let public = resource(
        json!({"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*",
        "Action":"secretsmanager:GetSecretValue","Resource":"*"}]}),
    );
    assert_eq!(public.broad_access_findings().len(), 1);
    let fenced = resource(
        json!({"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*",
        "Action":"secretsmanager:GetSecretValue","Resource":"*",
        "Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]}),
    );
    assert!(fenced.broad_access_findings().is_empty());
}

// ---- A reference evaluator, written independently from the raw JSON, for the property test.

fn ref_glob(p: &[char], t: &[char]) -> bool {
    match (p.first(), t.first()) {
        (None, None) => true,
        (Some('*'), _) => ref_glob(&p[1..], t) || (!t.is_empty() && ref_glob(p, &t[1..])),
        (Some('?'), Some(_)) => ref_glob(&p[1..], &t[1..]),
        (Some(a), Some(b)) if a == b => ref_glob(&p[1..], &t[1..]),
        _ => false,
    }
}

fn ref_like(pattern: &str, text: &str, fold: bool) -> bool {
    let f = |s: &str| -> Vec<char> {
        if fold {
            s.to_lowercase().chars().collect()
        } else {
            s.chars().collect()
        }
    };
    ref_glob(&f(pattern), &f(text))
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        Value::String(s) => vec![s.clone()],
        Value::Bool(b) => vec![b.to_string()],
        _ => vec![],
    }
}

fn ref_ipv4_in(ip: &str, cidr: &str) -> bool {
    let (net, bits) = cidr.split_once('/').unwrap_or((cidr, "32"));
    let (Ok(ip), Ok(net), Ok(bits)) = (
        ip.parse::<std::net::Ipv4Addr>(),
        net.parse::<std::net::Ipv4Addr>(),
        bits.parse::<u32>(),
    ) else {
        return false;
    };
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    u32::from(ip) & mask == u32::from(net) & mask
}

/// One operator on one key, per the IAM documentation's table; `ctx` keys are lower-case.
fn ref_condition(op: &str, key: &str, wanted: &[String], ctx: &[(String, String)]) -> bool {
    let actual = ctx
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str());
    let (op, if_exists) = match op.strip_suffix("IfExists") {
        Some(o) => (o, true),
        None => (op, false),
    };
    let negated = matches!(op, "StringNotEquals" | "StringNotLike" | "NotIpAddress");
    let Some(actual) = actual else {
        return if_exists || negated;
    };
    let hit = |w: &String| match op {
        "StringEquals" | "StringNotEquals" => actual == w,
        "StringLike" | "StringNotLike" => ref_like(w, actual, false),
        "Bool" => actual.eq_ignore_ascii_case(w),
        "IpAddress" | "NotIpAddress" => ref_ipv4_in(actual, w),
        // The generator writes every date in one fixed-width UTC form, so text order is time order.
        "DateLessThan" => actual < w.as_str(),
        "DateGreaterThan" => actual > w.as_str(),
        other => panic!("the generator made an operator the reference lacks: {other}"),
    };
    wanted.iter().any(hit) != negated
}

fn ref_principal(v: &Value, allow: bool) -> bool {
    let listed: Vec<String> = match v {
        Value::String(s) => vec![s.clone()],
        Value::Object(m) => m.get("AWS").map(strings).unwrap_or_default(),
        _ => vec![],
    };
    listed.iter().any(|p| {
        p == "*"
            || p == ALICE
            || (!allow && (p == ACCOUNT || p == "arn:aws:iam::111122223333:root"))
    })
}

fn ref_applies(st: &Value, action: &str, res: &str, ctx: &[(String, String)]) -> bool {
    let allow = st["Effect"] == "Allow";
    let in_list = |key: &str, text: &str, fold: bool| {
        st.get(key)
            .map(|v| strings(v).iter().any(|p| ref_like(p, text, fold)))
    };
    let action_ok = in_list("Action", action, true)
        .or_else(|| in_list("NotAction", action, true).map(|b| !b))
        .unwrap_or(false);
    let resource_ok = in_list("Resource", res, false)
        .or_else(|| in_list("NotResource", res, false).map(|b| !b))
        .unwrap_or(false);
    let principal_ok = match (st.get("Principal"), st.get("NotPrincipal")) {
        (Some(p), _) => ref_principal(p, allow),
        // NotPrincipal (Deny only) excludes what it lists; an account excludes its principals.
        (None, Some(p)) => !ref_principal(p, false),
        (None, None) => true,
    };
    let conditions_ok = st
        .get("Condition")
        .and_then(Value::as_object)
        .is_none_or(|block| {
            block.iter().all(|(op, keys)| {
                keys.as_object()
                    .unwrap()
                    .iter()
                    .all(|(key, wanted)| ref_condition(op, key, &strings(wanted), ctx))
            })
        });
    action_ok && resource_ok && principal_ok && conditions_ok
}

#[derive(Debug, PartialEq, Eq)]
enum RefDecision {
    Allow,
    ExplicitDeny,
    ImplicitDeny,
}

fn ref_evaluate(
    docs: &[Value],
    resource_doc: Option<&Value>,
    action: &str,
    res: &str,
    ctx: &[(String, String)],
) -> RefDecision {
    let statements: Vec<&Value> = docs
        .iter()
        .chain(resource_doc)
        .flat_map(|d| d["Statement"].as_array().unwrap().iter())
        .collect();
    let applying = |effect: &str| {
        statements
            .iter()
            .any(|st| st["Effect"] == effect && ref_applies(st, action, res, ctx))
    };
    if applying("Deny") {
        RefDecision::ExplicitDeny
    } else if applying("Allow") {
        RefDecision::Allow
    } else {
        RefDecision::ImplicitDeny
    }
}

fn pick<T: Clone + std::fmt::Debug + 'static>(items: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(items)
}

const ACTIONS: &[&str] = &[
    "*",
    "secretsmanager:*",
    "secretsmanager:Get*",
    "secretsmanager:GetSecretValue",
    "SecretsManager:getsecretvalue",
    "secretsmanager:PutSecretValue",
    "secretsmanager:Describe?ecret",
    "baton:*",
];
const RESOURCES: &[&str] = &[
    "*",
    "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/*",
    "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-??????",
    "arn:aws:secretsmanager:*:*:secret:dev/*",
    PROD_DB,
];
const PRINCIPALS: &[&str] = &[
    "*",
    ACCOUNT,
    "arn:aws:iam::111122223333:root",
    ALICE,
    "arn:aws:iam::111122223333:user/bob",
];
const OPERATORS: &[&str] = &[
    "StringEquals",
    "StringNotEquals",
    "StringLike",
    "StringNotLike",
    "StringEqualsIfExists",
    "Bool",
    "IpAddress",
    "NotIpAddress",
    "DateLessThan",
    "DateGreaterThan",
];

fn condition() -> impl Strategy<Value = (String, String, Value)> {
    pick(OPERATORS).prop_flat_map(|op| {
        let (key, values): (&str, &'static [&'static str]) = match op {
            "Bool" => ("aws:SecureTransport", &["true", "false"]),
            "IpAddress" | "NotIpAddress" => (
                "aws:SourceIp",
                &["10.0.0.0/8", "10.1.0.0/16", "192.168.0.1/32", "0.0.0.0/0"],
            ),
            "DateLessThan" | "DateGreaterThan" => (
                "aws:CurrentTime",
                &[
                    "2026-01-01T00:00:00Z",
                    "2026-06-01T00:00:00Z",
                    "2027-01-01T00:00:00Z",
                ],
            ),
            _ => (
                "secretsmanager:ResourceTag/team",
                &["payments", "pay*", "web", "?eb"],
            ),
        };
        proptest::sample::subsequence(values, 1..=2)
            .prop_map(move |vals| (op.to_owned(), key.to_owned(), json!(vals)))
    })
}

fn statement(resource_policy: bool) -> impl Strategy<Value = Value> {
    (
        any::<bool>(),
        any::<bool>(),
        proptest::sample::subsequence(ACTIONS, 1..=2),
        any::<bool>(),
        proptest::sample::subsequence(RESOURCES, 1..=2),
        proptest::sample::subsequence(PRINCIPALS, 1..=2),
        any::<bool>(),
        proptest::collection::vec(condition(), 0..=2),
    )
        .prop_map(
            move |(
                deny,
                not_action,
                actions,
                not_resource,
                resources,
                principals,
                not_principal,
                conds,
            )| {
                let mut st = serde_json::Map::new();
                st.insert("Effect".into(), json!(if deny { "Deny" } else { "Allow" }));
                st.insert(
                    (if not_action { "NotAction" } else { "Action" }).into(),
                    json!(actions),
                );
                st.insert(
                    (if not_resource {
                        "NotResource"
                    } else {
                        "Resource"
                    })
                    .into(),
                    json!(resources),
                );
                if resource_policy {
                    st.insert(
                        (if not_principal && deny {
                            "NotPrincipal"
                        } else {
                            "Principal"
                        })
                        .into(),
                        json!({"AWS": principals}),
                    );
                }
                let mut block = serde_json::Map::new();
                for (op, key, values) in conds {
                    block
                        .entry(op)
                        .or_insert_with(|| json!({}))
                        .as_object_mut()
                        .unwrap()
                        .insert(key, values);
                }
                if !block.is_empty() {
                    st.insert("Condition".into(), Value::Object(block));
                }
                Value::Object(st)
            },
        )
}

fn document(resource_policy: bool) -> impl Strategy<Value = Value> {
    proptest::collection::vec(statement(resource_policy), 1..=3)
        .prop_map(|sts| json!({"Version": "2012-10-17", "Statement": sts}))
}

fn context() -> impl Strategy<Value = Vec<(String, String)>> {
    (
        proptest::option::of(pick(&["10.1.2.3", "10.9.9.9", "192.168.0.1", "172.16.0.1"])),
        proptest::option::of(pick(&[
            "2025-12-31T23:59:59Z",
            "2026-03-01T00:00:00Z",
            "2026-12-31T00:00:00Z",
        ])),
        proptest::option::of(pick(&["payments", "web", "ops"])),
        proptest::option::of(pick(&["true", "false"])),
    )
        .prop_map(|(ip, time, team, tls)| {
            let mut ctx = Vec::new();
            let mut add = |k: &str, v: Option<&str>| {
                if let Some(v) = v {
                    ctx.push((k.to_owned(), v.to_owned()));
                }
            };
            add("aws:SourceIp", ip);
            add("aws:CurrentTime", time);
            add("secretsmanager:ResourceTag/team", team);
            add("aws:SecureTransport", tls);
            ctx
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn the_evaluator_agrees_with_the_reference(
        docs in proptest::collection::vec(document(false), 0..=2),
        resource_doc in proptest::option::of(document(true)),
        action in pick(&["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue",
                         "secretsmanager:DescribeSecret", "baton:ListEvents"]),
        res in pick(&[PROD_DB, DEV_APP, "*"]),
        ctx_pairs in context(),
    ) {
        let identity: Vec<(String, Policy)> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| (format!("p{i}"), Policy::parse(&d.to_string(), PolicyKind::Identity).unwrap()))
            .collect();
        let resource_policy = resource_doc
            .as_ref()
            .map(|d| Policy::parse(&d.to_string(), PolicyKind::Resource).unwrap());
        let mut ctx = Context::new();
        for (k, v) in &ctx_pairs {
            ctx.set(k, v.clone());
        }
        let got = evaluate(
            PolicySet { identity: &identity, resource: resource_policy.as_ref(), session: None },
            &Request { principal_arn: ALICE, account_id: ACCOUNT, action, resource: res, context: &ctx },
        );
        let want = ref_evaluate(&docs, resource_doc.as_ref(), action, res, &ctx_pairs);
        let got = match got {
            Decision::Allow(_) => RefDecision::Allow,
            Decision::ExplicitDeny { .. } => RefDecision::ExplicitDeny,
            Decision::ImplicitDeny { .. } => RefDecision::ImplicitDeny,
        };
        prop_assert_eq!(got, want);
    }

    #[test]
    fn wildcard_matching_agrees_with_the_recursive_definition(
        pattern in "[ab*?]{0,8}",
        text in "[ab]{0,10}",
    ) {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        prop_assert_eq!(wildcard_match(&pattern, &text, false), ref_glob(&p, &t));
    }
}
