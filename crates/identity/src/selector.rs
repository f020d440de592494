//! Workload selectors: facts about a calling process that registration entries match on.
//!
//! Written `TYPE:VALUE`, where the type has its own colon: `unix:uid:1000`,
//! `unix:gid:1000`, `unix:user:agent`, `unix:path:/usr/bin/python3`,
//! `unix:sha256:<64 hex>`. Warden takes them from the kernel (SO_PEERCRED and `/proc`), never
//! from the caller's word, so each value is checked to be something the kernel could report.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a selector was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// Not `TYPE:VALUE` with a known type.
    #[error(
        "unknown selector `{0}`: expected unix:uid:N, unix:gid:N, unix:user:NAME, unix:path:/ABS/PATH or unix:sha256:HEX"
    )]
    UnknownType(String),
    /// The value does not fit the type.
    #[error("invalid value for `{kind}`: {why}")]
    BadValue {
        /// The selector type.
        kind: &'static str,
        /// What is wrong.
        why: &'static str,
    },
}

/// One selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Selector {
    /// The process's user id.
    UnixUid(u32),
    /// The process's group id.
    UnixGid(u32),
    /// The process's user name.
    UnixUser(String),
    /// The absolute path of the process's executable.
    UnixPath(String),
    /// SHA-256 of the process's executable, lowercase hex.
    UnixSha256(String),
}

impl Selector {
    /// Parses `TYPE:VALUE`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let unknown = || SelectorError::UnknownType(s.chars().take(64).collect());
        let rest = s.strip_prefix("unix:").ok_or_else(unknown)?;
        let (kind, value) = rest.split_once(':').ok_or_else(unknown)?;
        let id = |kind: &'static str| {
            // Canonical decimal only: `01` or `+1` would make two spellings of one selector.
            if value.is_empty()
                || !value.bytes().all(|b| b.is_ascii_digit())
                || (value.len() > 1 && value.starts_with('0'))
            {
                return Err(SelectorError::BadValue {
                    kind,
                    why: "must be a decimal number without leading zeros",
                });
            }
            value.parse::<u32>().map_err(|_| SelectorError::BadValue {
                kind,
                why: "must fit in 32 bits",
            })
        };
        match kind {
            "uid" => Ok(Selector::UnixUid(id("unix:uid")?)),
            "gid" => Ok(Selector::UnixGid(id("unix:gid")?)),
            "user" => {
                let ok = (1..=32).contains(&value.len())
                    && value.bytes().enumerate().all(|(i, b)| {
                        b.is_ascii_lowercase()
                            || b == b'_'
                            || (i > 0 && (b.is_ascii_digit() || b == b'-'))
                    });
                if !ok {
                    return Err(SelectorError::BadValue {
                        kind: "unix:user",
                        why: "must be 1-32 characters of [a-z0-9_-], starting with a letter or `_`",
                    });
                }
                Ok(Selector::UnixUser(value.to_owned()))
            }
            "path" => {
                let ok = value.starts_with('/')
                    && value.len() <= 4096
                    && !value.contains('\0')
                    && !value.split('/').any(|seg| seg == "." || seg == "..");
                if !ok {
                    return Err(SelectorError::BadValue {
                        kind: "unix:path",
                        why: "must be an absolute path without `.` or `..` segments",
                    });
                }
                Ok(Selector::UnixPath(value.to_owned()))
            }
            "sha256" => {
                if value.len() != 64
                    || !value
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    return Err(SelectorError::BadValue {
                        kind: "unix:sha256",
                        why: "must be 64 lowercase hex characters",
                    });
                }
                Ok(Selector::UnixSha256(value.to_owned()))
            }
            _ => Err(unknown()),
        }
    }
}

/// Whether an entry with `required` selectors applies to a workload the kernel described with
/// `attested`: every required selector must be among the attested ones (SPIRE's "subset"
/// match). An entry with no selectors never matches.
pub fn matches(required: &[Selector], attested: &[Selector]) -> bool {
    !required.is_empty() && required.iter().all(|r| attested.contains(r))
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::UnixUid(v) => write!(f, "unix:uid:{v}"),
            Selector::UnixGid(v) => write!(f, "unix:gid:{v}"),
            Selector::UnixUser(v) => write!(f, "unix:user:{v}"),
            Selector::UnixPath(v) => write!(f, "unix:path:{v}"),
            Selector::UnixSha256(v) => write!(f, "unix:sha256:{v}"),
        }
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, SelectorError> {
        Self::parse(s)
    }
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_render_round_trip() {
        let hex = "ab".repeat(32);
        let path = format!("unix:sha256:{hex}");
        for ok in [
            "unix:uid:0",
            "unix:uid:1000",
            "unix:uid:4294967295",
            "unix:gid:42",
            "unix:user:agent",
            "unix:user:_svc-1",
            "unix:path:/usr/bin/python3",
            "unix:path:/opt/my agent/run",
            path.as_str(),
        ] {
            let sel = Selector::parse(ok).unwrap();
            assert_eq!(sel.to_string(), ok);
        }
    }

    #[test]
    fn subset_matching() {
        let p = |s: &str| Selector::parse(s).unwrap();
        let attested = [
            p("unix:uid:1000"),
            p("unix:gid:100"),
            p("unix:path:/usr/bin/python3"),
        ];
        assert!(matches(&[p("unix:uid:1000")], &attested));
        assert!(matches(
            &[p("unix:uid:1000"), p("unix:path:/usr/bin/python3")],
            &attested
        ));
        assert!(!matches(&[p("unix:uid:1000"), p("unix:uid:0")], &attested));
        assert!(!matches(&[p("unix:user:root")], &attested));
        assert!(
            !matches(&[], &attested),
            "an entry without selectors matches nothing"
        );
    }

    #[test]
    fn refusals_are_precise() {
        let cases: &[(&str, &str)] = &[
            ("", "unknown"),
            ("uid:1000", "unknown"),
            ("unix:pid:1", "unknown"),
            ("unix:uid", "unknown"),
            ("k8s:ns:default", "unknown"),
            ("unix:uid:", "unix:uid"),
            ("unix:uid:-1", "unix:uid"),
            ("unix:uid:01", "unix:uid"),
            ("unix:uid:+1", "unix:uid"),
            ("unix:uid:4294967296", "unix:uid"),
            ("unix:gid:x", "unix:gid"),
            ("unix:user:", "unix:user"),
            ("unix:user:Root", "unix:user"),
            ("unix:user:1abc", "unix:user"),
            ("unix:path:relative/bin", "unix:path"),
            ("unix:path:/usr/../bin/sh", "unix:path"),
            ("unix:path:/a\0b", "unix:path"),
            ("unix:sha256:abc", "unix:sha256"),
            (
                "unix:sha256:ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB",
                "unix:sha256",
            ),
        ];
        for (input, kind) in cases {
            let err = Selector::parse(input).unwrap_err();
            match (&err, *kind) {
                (SelectorError::UnknownType(_), "unknown") => {}
                (SelectorError::BadValue { kind: k, .. }, want) if *k == want => {}
                _ => panic!("{input:?}: got {err:?}, want {kind}"),
            }
        }
    }
}
