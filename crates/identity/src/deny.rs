//! The denylist as every verification path sees it: SPIFFE IDs, JWT ids (`jti`) and
//! certificate serials that are refused no matter what signature they carry, so that a
//! revocation takes effect before credentials expire.

use std::{collections::HashSet, sync::RwLock};

use crate::SpiffeId;

/// What a denylist entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DenyKind {
    /// A workload identity: no SVID is issued for it and no token with this `sub` validates.
    SpiffeId,
    /// One JWT-SVID (or access token), by its `jti`.
    Jti,
    /// One X.509 certificate, by its serial (lowercase hex).
    Serial,
}

impl DenyKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyKind::SpiffeId => "spiffe_id",
            DenyKind::Jti => "jti",
            DenyKind::Serial => "serial",
        }
    }

    /// Parses a stored name and checks `value` fits the kind; returns the canonical value.
    pub fn parse(kind: &str, value: &str) -> Result<(Self, String), String> {
        match kind {
            "spiffe_id" => SpiffeId::parse(value)
                .map(|id| (DenyKind::SpiffeId, id.to_string()))
                .map_err(|e| e.to_string()),
            "jti"
                if (1..=128).contains(&value.len())
                    && value.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                Ok((DenyKind::Jti, value.to_owned()))
            }
            "jti" => Err("a jti is 1-128 printable ASCII characters".into()),
            "serial"
                if (2..=40).contains(&value.len())
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
            {
                Ok((DenyKind::Serial, value.to_owned()))
            }
            "serial" => Err("a serial is 2-40 lowercase hex characters".into()),
            other => Err(format!(
                "unknown kind `{other}`: expected spiffe_id, jti or serial"
            )),
        }
    }
}

/// The current denylist, shared by all verification paths of a process.
#[derive(Debug, Default)]
pub struct Denylist {
    entries: RwLock<HashSet<(DenyKind, String)>>,
}

impl Denylist {
    /// An empty denylist.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashSet<(DenyKind, String)>> {
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<(DenyKind, String)>> {
        self.entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the whole list (after reading it from the store).
    pub fn replace(&self, entries: impl IntoIterator<Item = (DenyKind, String)>) {
        *self.write() = entries.into_iter().collect();
    }

    /// Adds one entry.
    pub fn insert(&self, kind: DenyKind, value: String) {
        self.write().insert((kind, value));
    }

    /// Removes one entry.
    pub fn remove(&self, kind: DenyKind, value: &str) {
        self.write().remove(&(kind, value.to_owned()));
    }

    /// Whether `kind`/`value` is denied.
    pub fn denies(&self, kind: DenyKind, value: &str) -> bool {
        self.read().contains(&(kind, value.to_owned()))
    }

    /// Whether a workload identity is denied.
    pub fn denies_id(&self, id: &SpiffeId) -> bool {
        self.denies(DenyKind::SpiffeId, id.as_str())
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_insert_remove() {
        assert_eq!(
            DenyKind::parse("spiffe_id", "spiffe://example.org/a"),
            Ok((DenyKind::SpiffeId, "spiffe://example.org/a".to_owned()))
        );
        for (kind, value) in [
            ("spiffe_id", "spiffe://example.org/"),
            ("jti", ""),
            ("jti", "a b"),
            ("serial", "ABCD"),
            ("serial", "x"),
            ("email", "a@b"),
        ] {
            assert!(DenyKind::parse(kind, value).is_err(), "{kind} {value}");
        }
        let d = Denylist::new();
        let id = SpiffeId::parse("spiffe://example.org/a").unwrap();
        assert!(!d.denies_id(&id));
        d.insert(DenyKind::SpiffeId, id.to_string());
        assert!(d.denies_id(&id));
        assert!(!d.denies(DenyKind::Jti, id.as_str()), "kinds are separate");
        d.remove(DenyKind::SpiffeId, id.as_str());
        assert!(d.is_empty());
        d.replace([(DenyKind::Jti, "j1".to_owned())]);
        assert!(d.denies(DenyKind::Jti, "j1") && d.len() == 1);
    }
}
