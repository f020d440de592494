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

/// The current denylist, shared by all verification paths of a process: the operator's
/// entries, the identities on hold (kill switch), and revoked tokens until they expire.
#[derive(Debug, Default)]
pub struct Denylist {
    entries: RwLock<HashSet<(DenyKind, String)>>,
    held: RwLock<HashSet<String>>,
    tokens: RwLock<std::collections::HashMap<String, i64>>,
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

    /// Whether `kind`/`value` is denied (a held identity and a revoked token count).
    pub fn denies(&self, kind: DenyKind, value: &str) -> bool {
        let held = match kind {
            DenyKind::SpiffeId => lock_read(&self.held).contains(value),
            DenyKind::Jti => lock_read(&self.tokens).contains_key(value),
            DenyKind::Serial => false,
        };
        held || self.read().contains(&(kind, value.to_owned()))
    }

    /// Whether a workload identity is denied.
    pub fn denies_id(&self, id: &SpiffeId) -> bool {
        self.denies(DenyKind::SpiffeId, id.as_str())
    }

    /// Replaces the set of identities on hold (SPIFFE IDs); they are denied like entries.
    pub fn replace_held(&self, ids: impl IntoIterator<Item = String>) {
        *lock_write(&self.held) = ids.into_iter().collect();
    }

    /// Puts identities on hold at once (before the next [`Denylist::replace_held`]).
    pub fn hold(&self, ids: impl IntoIterator<Item = String>) {
        lock_write(&self.held).extend(ids);
    }

    /// Whether an identity is on hold.
    pub fn is_held(&self, id: &str) -> bool {
        lock_read(&self.held).contains(id)
    }

    /// Denies a token by `jti` until `expires_unix_s` (after which it fails validation
    /// anyway and is forgotten by [`Denylist::prune_tokens`]).
    pub fn revoke_token(&self, jti: String, expires_unix_s: i64) {
        lock_write(&self.tokens).insert(jti, expires_unix_s);
    }

    /// Forgets revoked tokens that expired before `now_unix_s`; returns how many remain.
    pub fn prune_tokens(&self, now_unix_s: i64) -> usize {
        let mut tokens = lock_write(&self.tokens);
        tokens.retain(|_, exp| *exp >= now_unix_s);
        tokens.len()
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

fn lock_read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock_write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
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
        // Holds and revoked tokens are kept apart from the operator's entries.
        d.replace_held(["spiffe://example.org/a".to_owned()]);
        assert!(d.denies_id(&id) && d.is_held(id.as_str()));
        d.replace([]);
        assert!(d.denies_id(&id), "replacing entries keeps holds");
        d.replace_held([]);
        assert!(!d.denies_id(&id));
        d.hold([id.to_string()]);
        assert!(d.denies_id(&id));
        d.revoke_token("t1".into(), 100);
        assert!(d.denies(DenyKind::Jti, "t1"));
        assert_eq!(d.prune_tokens(100), 1);
        assert_eq!(d.prune_tokens(101), 0);
        assert!(!d.denies(DenyKind::Jti, "t1"));
    }
}
