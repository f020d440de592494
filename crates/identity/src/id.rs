//! SPIFFE IDs: `spiffe://<trust domain><path>`.
//!
//! Rules (SPIFFE-ID.md §2.1–2.3, as enforced by go-spiffe v2):
//! - the scheme is exactly `spiffe` (lowercase) followed by `://`;
//! - the trust domain is 1–255 characters of `[a-z0-9._-]`: no uppercase, no port, no
//!   userinfo, no percent-encoding;
//! - the path is empty, or `/`-separated segments of `[a-zA-Z0-9._-]`, none empty, none `.` or
//!   `..`, with no trailing slash; query and fragment are impossible (`?`, `#` are not allowed
//!   characters);
//! - the whole ID is at most 2048 bytes (§2.3: the maximum URI length implementations must
//!   support).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const SCHEME: &str = "spiffe://";
/// Longest trust domain name (SPIFFE-ID.md §2.1).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// Longest SPIFFE ID, in bytes (SPIFFE-ID.md §2.3).
pub const MAX_ID_LEN: usize = 2048;

/// Why a SPIFFE ID or trust domain was refused. Messages follow go-spiffe's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// Nothing was given.
    #[error("cannot be empty")]
    Empty,
    /// The ID does not start with `spiffe://`.
    #[error("scheme is missing or invalid: `{0}` must start with `spiffe://`")]
    WrongScheme(String),
    /// Nothing between `spiffe://` and the path.
    #[error("trust domain is missing in `{0}`")]
    MissingTrustDomain(String),
    /// A character outside `[a-z0-9._-]` in the trust domain.
    #[error(
        "invalid trust domain `{0}`: trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores"
    )]
    BadTrustDomainChar(String),
    /// The trust domain is longer than 255 characters.
    #[error("invalid trust domain: longer than {MAX_TRUST_DOMAIN_LEN} characters ({0})")]
    TrustDomainTooLong(usize),
    /// A character outside `[a-zA-Z0-9._-]` in a path segment.
    #[error(
        "invalid path segment `{0}`: path segment characters are limited to letters, numbers, dots, dashes, and underscores"
    )]
    BadPathSegmentChar(String),
    /// A `.` or `..` segment.
    #[error("invalid path `{0}`: path cannot contain dot segments")]
    DotSegment(String),
    /// `//` in the path.
    #[error("invalid path `{0}`: path cannot contain empty segments")]
    EmptySegment(String),
    /// The path ends with `/`.
    #[error("invalid path `{0}`: path cannot have a trailing slash")]
    TrailingSlash(String),
    /// A path that does not start with `/`.
    #[error("invalid path `{0}`: path must have a leading slash")]
    NoLeadingSlash(String),
    /// The whole ID is longer than 2048 bytes.
    #[error("invalid SPIFFE ID: longer than {MAX_ID_LEN} bytes ({0})")]
    TooLong(usize),
}

/// Shows at most 128 bytes of outside input in an error (never a huge blob in a log).
fn excerpt(s: &str) -> String {
    if s.len() <= 128 {
        return s.to_owned();
    }
    let mut cut = 128;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

fn is_trust_domain_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
}

fn is_path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')
}

/// A trust domain name, e.g. `example.org`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a bare trust domain name (not a `spiffe://` URI).
    pub fn parse(name: &str) -> Result<Self, IdError> {
        if name.is_empty() {
            return Err(IdError::Empty);
        }
        if name.len() > MAX_TRUST_DOMAIN_LEN {
            return Err(IdError::TrustDomainTooLong(name.len()));
        }
        if !name.bytes().all(is_trust_domain_char) {
            return Err(IdError::BadTrustDomainChar(excerpt(name)));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ID of the trust domain itself, `spiffe://<name>`.
    pub fn id(&self) -> SpiffeId {
        SpiffeId {
            uri: format!("{SCHEME}{}", self.0),
            td_end: SCHEME.len() + self.0.len(),
        }
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

/// A SPIFFE ID, e.g. `spiffe://example.org/agent/coder`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    // INVARIANT: `uri` is a valid SPIFFE ID and `uri[SCHEME.len()..td_end]` its trust domain.
    uri: String,
    td_end: usize,
}

impl SpiffeId {
    /// Parses a SPIFFE ID URI.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s.len() > MAX_ID_LEN {
            return Err(IdError::TooLong(s.len()));
        }
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| IdError::WrongScheme(excerpt(s)))?;
        let td_len = rest.find('/').unwrap_or(rest.len());
        let (td, path) = rest.split_at(td_len);
        if td.is_empty() {
            return Err(IdError::MissingTrustDomain(excerpt(s)));
        }
        // The trust domain is the host of the URI: any port, userinfo, uppercase letter or
        // percent-encoding shows up here as a character outside the allowed set.
        TrustDomain::parse(td)?;
        check_path(path)?;
        Ok(Self {
            uri: s.to_owned(),
            td_end: SCHEME.len() + td_len,
        })
    }

    /// The ID `spiffe://<td>/<segments joined by />`; each segment is checked.
    pub fn from_segments(td: &TrustDomain, segments: &[&str]) -> Result<Self, IdError> {
        let mut uri = td.id().uri;
        for segment in segments {
            uri.push('/');
            uri.push_str(segment);
        }
        Self::parse(&uri)
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.uri[SCHEME.len()..self.td_end].to_owned())
    }

    /// The trust domain's name, without allocating.
    pub fn trust_domain_name(&self) -> &str {
        &self.uri[SCHEME.len()..self.td_end]
    }

    /// The path: empty, or `/seg/…`.
    pub fn path(&self) -> &str {
        &self.uri[self.td_end..]
    }

    /// Whether the ID belongs to `td`.
    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        self.trust_domain_name() == td.as_str()
    }

    /// The URI.
    pub fn as_str(&self) -> &str {
        &self.uri
    }
}

/// Checks a path: empty, or `/`-separated valid segments (SPIFFE-ID.md §2.2).
fn check_path(path: &str) -> Result<(), IdError> {
    if path.is_empty() {
        return Ok(());
    }
    let Some(body) = path.strip_prefix('/') else {
        return Err(IdError::NoLeadingSlash(excerpt(path)));
    };
    if body.is_empty() || path.ends_with('/') {
        return Err(IdError::TrailingSlash(excerpt(path)));
    }
    for segment in body.split('/') {
        match segment {
            "" => return Err(IdError::EmptySegment(excerpt(path))),
            "." | ".." => return Err(IdError::DotSegment(excerpt(path))),
            _ if !segment.bytes().all(is_path_char) => {
                return Err(IdError::BadPathSegmentChar(excerpt(segment)));
            }
            _ => {}
        }
    }
    Ok(())
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.uri)
    }
}

impl FromStr for SpiffeId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.uri)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected outcome of a row: `(trust domain, path)` or the exact error.
    type Want<'a> = Result<(&'a str, &'a str), IdError>;

    /// One row per rule of SPIFFE-ID.md §2, valid and invalid, with the exact error.
    #[test]
    fn spec_rules() {
        use IdError::*;
        let long_td = "a".repeat(256);
        let max_td = "a".repeat(255);
        let long_path = format!("spiffe://example.org/{}", "a".repeat(2048));
        let long_td_input = long_td_id(&long_td);
        let cases: Vec<(&str, Want<'_>)> = vec![
            // valid
            ("spiffe://example.org", Ok(("example.org", ""))),
            (
                "spiffe://example.org/agent/coder",
                Ok(("example.org", "/agent/coder")),
            ),
            (
                "spiffe://a-b_c.d9/A.b-C_0/x",
                Ok(("a-b_c.d9", "/A.b-C_0/x")),
            ),
            ("spiffe://example.org/...", Ok(("example.org", "/..."))),
            (
                "spiffe://example.org/.a/..b",
                Ok(("example.org", "/.a/..b")),
            ),
            ("spiffe://1.2.3.4/x", Ok(("1.2.3.4", "/x"))),
            // §2.1 scheme
            ("", Err(Empty)),
            ("example.org/x", Err(WrongScheme("example.org/x".into()))),
            (
                "SPIFFE://example.org/x",
                Err(WrongScheme("SPIFFE://example.org/x".into())),
            ),
            (
                "spiffe:/example.org/x",
                Err(WrongScheme("spiffe:/example.org/x".into())),
            ),
            (
                "http://example.org/x",
                Err(WrongScheme("http://example.org/x".into())),
            ),
            (
                " spiffe://example.org",
                Err(WrongScheme(" spiffe://example.org".into())),
            ),
            // §2.1 trust domain
            ("spiffe://", Err(MissingTrustDomain("spiffe://".into()))),
            ("spiffe:///x", Err(MissingTrustDomain("spiffe:///x".into()))),
            (
                "spiffe://Example.org/x",
                Err(BadTrustDomainChar("Example.org".into())),
            ),
            (
                "spiffe://example.org:8080/x",
                Err(BadTrustDomainChar("example.org:8080".into())),
            ),
            (
                "spiffe://user@example.org/x",
                Err(BadTrustDomainChar("user@example.org".into())),
            ),
            (
                "spiffe://ex%41mple.org",
                Err(BadTrustDomainChar("ex%41mple.org".into())),
            ),
            (
                "spiffe://example.org?x=1",
                Err(BadTrustDomainChar("example.org?x=1".into())),
            ),
            (
                "spiffe://exämple.org",
                Err(BadTrustDomainChar("exämple.org".into())),
            ),
            (&long_td_input, Err(TrustDomainTooLong(256))),
            // §2.2 path
            ("spiffe://example.org/", Err(TrailingSlash("/".into()))),
            ("spiffe://example.org/a/", Err(TrailingSlash("/a/".into()))),
            ("spiffe://example.org//a", Err(EmptySegment("//a".into()))),
            (
                "spiffe://example.org/a//b",
                Err(EmptySegment("/a//b".into())),
            ),
            ("spiffe://example.org/.", Err(DotSegment("/.".into()))),
            ("spiffe://example.org/..", Err(DotSegment("/..".into()))),
            (
                "spiffe://example.org/a/./b",
                Err(DotSegment("/a/./b".into())),
            ),
            (
                "spiffe://example.org/a/../b",
                Err(DotSegment("/a/../b".into())),
            ),
            (
                "spiffe://example.org/a?x=1",
                Err(BadPathSegmentChar("a?x=1".into())),
            ),
            (
                "spiffe://example.org/a#frag",
                Err(BadPathSegmentChar("a#frag".into())),
            ),
            (
                "spiffe://example.org/a%2Fb",
                Err(BadPathSegmentChar("a%2Fb".into())),
            ),
            (
                "spiffe://example.org/a b",
                Err(BadPathSegmentChar("a b".into())),
            ),
            (
                "spiffe://example.org/a:b",
                Err(BadPathSegmentChar("a:b".into())),
            ),
            (
                "spiffe://example.org/a@b",
                Err(BadPathSegmentChar("a@b".into())),
            ),
            (
                "spiffe://example.org/é",
                Err(BadPathSegmentChar("é".into())),
            ),
            // §2.3 length
            (&long_path, Err(TooLong(long_path.len()))),
        ];
        for (input, want) in cases {
            let got = SpiffeId::parse(input)
                .map(|id| (id.trust_domain_name().to_owned(), id.path().to_owned()));
            let want = want.map(|(td, p)| (td.to_owned(), p.to_owned()));
            assert_eq!(got, want, "input {input:?}");
        }
        // 255-character trust domain is the maximum, and it parses.
        assert!(SpiffeId::parse(&long_td_id(&max_td)).is_ok());
    }

    fn long_td_id(td: &str) -> String {
        format!("spiffe://{td}/x")
    }

    #[test]
    fn trust_domains() {
        assert_eq!(
            TrustDomain::parse("example.org").unwrap().as_str(),
            "example.org"
        );
        assert_eq!(TrustDomain::parse(""), Err(IdError::Empty));
        for bad in ["Example.org", "spiffe://example.org", "a b", "a/b", "a:1"] {
            assert!(
                matches!(TrustDomain::parse(bad), Err(IdError::BadTrustDomainChar(_))),
                "{bad}"
            );
        }
        assert_eq!(
            TrustDomain::parse(&"a".repeat(256)),
            Err(IdError::TrustDomainTooLong(256))
        );
    }

    #[test]
    fn accessors_membership_and_construction() {
        let td = TrustDomain::parse("example.org").unwrap();
        let id = SpiffeId::from_segments(&td, &["agent", "coder"]).unwrap();
        assert_eq!(id.as_str(), "spiffe://example.org/agent/coder");
        assert_eq!(id.trust_domain(), td);
        assert_eq!(id.path(), "/agent/coder");
        assert!(id.is_member_of(&td));
        assert!(!id.is_member_of(&TrustDomain::parse("example.com").unwrap()));
        assert_eq!(td.id().as_str(), "spiffe://example.org");
        assert_eq!(td.id().path(), "");
        assert!(
            SpiffeId::from_segments(&td, &["a/b"]).is_ok(),
            "a segment may hold a slash-joined path"
        );
        assert!(SpiffeId::from_segments(&td, &[".."]).is_err());
        assert!(SpiffeId::from_segments(&td, &[""]).is_err());
    }

    #[test]
    fn serde_round_trip_and_refusal() {
        let id: SpiffeId = serde_json::from_str("\"spiffe://example.org/x\"").unwrap();
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"spiffe://example.org/x\""
        );
        assert!(serde_json::from_str::<SpiffeId>("\"spiffe://example.org/\"").is_err());
        assert!(serde_json::from_str::<TrustDomain>("\"EXAMPLE\"").is_err());
    }

    #[test]
    fn errors_never_echo_huge_input() {
        let huge = format!("spiffe://example.org/{}", "é".repeat(900));
        let msg = SpiffeId::parse(&huge).unwrap_err().to_string();
        assert!(msg.len() < 400, "{msg}");
    }

    /// Mutations of valid IDs: whatever parses re-renders to exactly its input and re-parses
    /// to the same value; nothing panics.
    #[test]
    fn mutations_parse_consistently() {
        let seeds = [
            "spiffe://example.org/agent/coder",
            "spiffe://a.b/c",
            "spiffe://x",
        ];
        let alphabet = b"azAZ09._-/:@%?#. \xc3\xa9";
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let seed = seeds[(next() % 3) as usize].as_bytes();
            let mut bytes = seed.to_vec();
            for _ in 0..=(next() % 3) {
                let pos = (next() % (bytes.len() as u64 + 1)) as usize;
                let b = alphabet[(next() % alphabet.len() as u64) as usize];
                match next() % 3 {
                    0 if pos < bytes.len() => bytes[pos] = b,
                    1 if pos < bytes.len() => {
                        bytes.remove(pos);
                    }
                    _ => bytes.insert(pos, b),
                }
            }
            let Ok(s) = std::str::from_utf8(&bytes) else {
                continue;
            };
            if let Ok(id) = SpiffeId::parse(s) {
                assert_eq!(id.as_str(), s);
                assert_eq!(SpiffeId::parse(id.as_str()).unwrap(), id);
                assert!(TrustDomain::parse(id.trust_domain_name()).is_ok());
            }
        }
    }
}
