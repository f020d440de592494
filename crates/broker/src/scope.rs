//! Scopes, audiences and the delegation rule: a token exchanged for a sub-agent may only
//! narrow what its parent grants — scopes a subset, audiences a subset, lifetime no longer,
//! the same task, authorization details among the parent's — and the chain of actors is
//! bounded.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::BrokerError;

/// Most scopes in one request.
pub const MAX_SCOPES: usize = 64;
/// Most audiences (`audience` plus `resource`) in one request.
pub const MAX_AUDIENCES: usize = 8;

/// A set of OAuth scopes (RFC 6749 §3.3: space-delimited `scope-token`s of `NQCHAR`s).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet(BTreeSet<String>);

impl ScopeSet {
    /// Parses a `scope` parameter. Duplicates collapse; order does not matter.
    pub fn parse(s: &str) -> Result<Self, BrokerError> {
        let mut out = BTreeSet::new();
        for token in s.split(' ').filter(|t| !t.is_empty()) {
            // NQCHAR = %x21 / %x23-5B / %x5D-7E: printable ASCII but `"` and `\`.
            if token.len() > 128
                || !token
                    .bytes()
                    .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
            {
                return Err(BrokerError::InvalidScope(format!(
                    "scope `{}` is not an RFC 6749 scope token (printable ASCII without quotes or backslashes, at most 128)",
                    token.escape_debug()
                )));
            }
            out.insert(token.to_owned());
        }
        if out.len() > MAX_SCOPES {
            return Err(BrokerError::InvalidScope(format!(
                "at most {MAX_SCOPES} scopes per request"
            )));
        }
        Ok(ScopeSet(out))
    }

    /// Whether no scope is named.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The scopes, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// The scopes of `self` that `other` does not hold.
    pub fn missing_from(&self, other: &ScopeSet) -> Vec<String> {
        self.0.difference(&other.0).cloned().collect()
    }

    /// The space-separated form (sorted).
    pub fn to_param(&self) -> String {
        self.0.iter().cloned().collect::<Vec<_>>().join(" ")
    }
}

/// Checks an RFC 8693 `audience` value: a logical name, 1-256 printable ASCII characters.
pub fn parse_audience(s: &str) -> Result<String, BrokerError> {
    if s.is_empty() || s.len() > 256 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(BrokerError::InvalidTarget(format!(
            "audience `{}` must be 1-256 printable ASCII characters without spaces",
            s.escape_debug()
        )));
    }
    Ok(s.to_owned())
}

/// Checks an RFC 8707 `resource` value: an absolute URI without a fragment.
pub fn parse_resource(s: &str) -> Result<String, BrokerError> {
    let s = parse_audience(s)?;
    let scheme_ok = s.split_once(':').is_some_and(|(scheme, rest)| {
        !rest.is_empty()
            && scheme
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    });
    if !scheme_ok {
        return Err(BrokerError::InvalidTarget(format!(
            "resource `{s}` is not an absolute URI (RFC 8707 §2)"
        )));
    }
    if s.contains('#') {
        return Err(BrokerError::InvalidTarget(format!(
            "resource `{s}` has a fragment (RFC 8707 §2 forbids one)"
        )));
    }
    Ok(s)
}

/// What a token grants, as far as delegation is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Scopes.
    pub scopes: ScopeSet,
    /// Audiences.
    pub audiences: BTreeSet<String>,
    /// Expiry, seconds since the epoch.
    pub expires_at: i64,
    /// Actors in the chain (0 for a token issued to its subject).
    pub depth: usize,
    /// The task.
    pub task: Option<String>,
    /// RFC 9396 authorization details (each an object).
    pub authorization_details: Vec<Value>,
}

/// What a delegation asks for; empty fields inherit the parent's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Asked {
    /// Scopes (empty: the parent's).
    pub scopes: ScopeSet,
    /// Audiences (empty: the parent's).
    pub audiences: BTreeSet<String>,
    /// Wanted expiry, seconds (clamped to the parent's).
    pub expires_at: i64,
    /// The task named (must be the parent's, when it has one).
    pub task: Option<String>,
    /// Details (empty: the parent's).
    pub authorization_details: Vec<Value>,
}

/// Why a delegation was refused: it would widen the parent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Widening {
    /// Scopes the parent does not hold.
    #[error("scope widening: the parent token does not hold {}", .0.join(" "))]
    Scope(Vec<String>),
    /// Audiences outside the parent's.
    #[error("audience widening: the parent token is not for {}", .0.join(" "))]
    Audience(Vec<String>),
    /// A task other than the parent's.
    #[error(
        "task widening: the parent token is for task {}, not {}",
        parent.as_deref().unwrap_or("(none)"),
        asked.as_deref().unwrap_or("(none)")
    )]
    Task {
        /// The parent's.
        parent: Option<String>,
        /// Asked.
        asked: Option<String>,
    },
    /// Authorization details the parent does not hold.
    #[error("authorization_details widening: {0} entries are not among the parent token's")]
    Details(usize),
    /// Too many hops.
    #[error("delegation depth limit {limit} reached")]
    Depth {
        /// The configured limit.
        limit: usize,
    },
}

/// The grant a delegation gets, or why not: never wider than `parent`, and at most
/// `depth_limit` actors deep.
pub fn narrow(parent: &Grant, asked: &Asked, depth_limit: usize) -> Result<Grant, Widening> {
    if parent.depth + 1 > depth_limit {
        return Err(Widening::Depth { limit: depth_limit });
    }
    let scopes = if asked.scopes.is_empty() {
        parent.scopes.clone()
    } else {
        let extra = asked.scopes.missing_from(&parent.scopes);
        if !extra.is_empty() {
            return Err(Widening::Scope(extra));
        }
        asked.scopes.clone()
    };
    let audiences = if asked.audiences.is_empty() {
        parent.audiences.clone()
    } else {
        let extra: Vec<String> = asked
            .audiences
            .difference(&parent.audiences)
            .cloned()
            .collect();
        if !extra.is_empty() {
            return Err(Widening::Audience(extra));
        }
        asked.audiences.clone()
    };
    let task = match (&parent.task, &asked.task) {
        (p, None) => p.clone(),
        (None, Some(_)) => {
            return Err(Widening::Task {
                parent: None,
                asked: asked.task.clone(),
            });
        }
        (Some(p), Some(a)) if p == a => Some(p.clone()),
        (Some(_), Some(_)) => {
            return Err(Widening::Task {
                parent: parent.task.clone(),
                asked: asked.task.clone(),
            });
        }
    };
    let authorization_details = if asked.authorization_details.is_empty() {
        parent.authorization_details.clone()
    } else {
        let outside = asked
            .authorization_details
            .iter()
            .filter(|d| !parent.authorization_details.contains(d))
            .count();
        if outside > 0 {
            return Err(Widening::Details(outside));
        }
        asked.authorization_details.clone()
    };
    Ok(Grant {
        scopes,
        audiences,
        expires_at: asked.expires_at.min(parent.expires_at),
        depth: parent.depth + 1,
        task,
        authorization_details,
    })
}

/// Checks RFC 9396 `authorization_details`: a JSON array of objects, each with a string
/// `type`; at most 16 entries.
pub fn parse_authorization_details(text: &str) -> Result<Vec<Value>, BrokerError> {
    let bad = |why: String| BrokerError::InvalidAuthorizationDetails(why);
    let value: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let Value::Array(items) = value else {
        return Err(bad("must be a JSON array (RFC 9396 §2)".into()));
    };
    if items.len() > 16 {
        return Err(bad("at most 16 entries".into()));
    }
    for (i, item) in items.iter().enumerate() {
        let ok = item
            .as_object()
            .and_then(|o| o.get("type"))
            .and_then(Value::as_str);
        if ok.is_none_or(str::is_empty) {
            return Err(bad(format!(
                "entry {i} must be an object with a non-empty string `type` (RFC 9396 §2)"
            )));
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> ScopeSet {
        ScopeSet::parse(s).unwrap()
    }

    fn auds(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn parent() -> Grant {
        Grant {
            scopes: set("repo:read repo:write"),
            audiences: auds(&["https://git", "https://ci"]),
            expires_at: 1_000,
            depth: 0,
            task: Some("T1".into()),
            authorization_details: vec![serde_json::json!({"type": "repo", "id": "a"})],
        }
    }

    #[test]
    fn scopes_parse_per_rfc6749() {
        assert_eq!(set("b a  a").to_param(), "a b");
        assert!(set("").is_empty());
        for bad in ["a\"b", "a\\b", "é", "a\tb"] {
            assert!(ScopeSet::parse(bad).is_err(), "{bad}");
        }
        let many = (0..65)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(ScopeSet::parse(&many).is_err());
    }

    #[test]
    fn targets_parse_per_rfc8707() {
        assert!(parse_resource("https://api.example.org/v1").is_ok());
        assert!(parse_resource("urn:example:db").is_ok());
        for bad in ["api", "https://a#frag", "", "1http://a", "https:"] {
            assert!(parse_resource(bad).is_err(), "{bad}");
        }
        assert!(parse_audience("git").is_ok());
        assert!(parse_audience("a b").is_err());
    }

    #[test]
    fn delegation_only_narrows() {
        let p = parent();
        // Inherit everything; lifetime clamped.
        let g = narrow(
            &p,
            &Asked {
                expires_at: 5_000,
                ..Asked::default()
            },
            3,
        )
        .unwrap();
        assert_eq!(
            (g.scopes.clone(), g.audiences.clone(), g.expires_at, g.depth),
            (p.scopes.clone(), p.audiences.clone(), 1_000, 1)
        );
        assert_eq!(g.task.as_deref(), Some("T1"));
        // Narrower.
        let g = narrow(
            &p,
            &Asked {
                scopes: set("repo:read"),
                audiences: auds(&["https://git"]),
                expires_at: 500,
                task: Some("T1".into()),
                authorization_details: p.authorization_details.clone(),
            },
            3,
        )
        .unwrap();
        assert_eq!(
            (g.scopes.to_param().as_str(), g.expires_at),
            ("repo:read", 500)
        );
        let cases: Vec<(Asked, Widening)> = vec![
            (
                Asked {
                    scopes: set("repo:read repo:admin"),
                    ..Asked::default()
                },
                Widening::Scope(vec!["repo:admin".into()]),
            ),
            (
                Asked {
                    audiences: auds(&["https://prod"]),
                    ..Asked::default()
                },
                Widening::Audience(vec!["https://prod".into()]),
            ),
            (
                Asked {
                    task: Some("T2".into()),
                    ..Asked::default()
                },
                Widening::Task {
                    parent: Some("T1".into()),
                    asked: Some("T2".into()),
                },
            ),
            (
                Asked {
                    authorization_details: vec![serde_json::json!({"type": "repo", "id": "b"})],
                    ..Asked::default()
                },
                Widening::Details(1),
            ),
        ];
        for (asked, want) in cases {
            assert_eq!(narrow(&p, &asked, 3), Err(want));
        }
        let deep = Grant {
            depth: 3,
            ..p.clone()
        };
        assert_eq!(
            narrow(&deep, &Asked::default(), 3),
            Err(Widening::Depth { limit: 3 })
        );
        let untasked = Grant { task: None, ..p };
        assert!(matches!(
            narrow(
                &untasked,
                &Asked {
                    task: Some("T9".into()),
                    ..Asked::default()
                },
                3
            ),
            Err(Widening::Task { .. })
        ));
    }

    #[test]
    fn authorization_details_shape() {
        assert_eq!(
            parse_authorization_details(r#"[{"type":"a","x":1}]"#)
                .unwrap()
                .len(),
            1
        );
        for bad in ["{}", "[1]", r#"[{"x":1}]"#, r#"[{"type":""}]"#, "nope"] {
            assert!(parse_authorization_details(bad).is_err(), "{bad}");
        }
    }
}
