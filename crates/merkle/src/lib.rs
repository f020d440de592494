//! RFC 6962 / RFC 9162 Merkle tree math for Warden's ledger: hashing, root computation,
//! inclusion and consistency proof generation and verification.
//!
//! Pure logic: no I/O, no clock, no allocation beyond what a proof needs. The ledger crate
//! stores leaves; this crate only says what their hashes commit to.
//!
//! Hashing (RFC 9162 §2.1.1): `leaf = SHA-256(0x00 || data)`,
//! `node = SHA-256(0x01 || left || right)`, the empty tree's root is `SHA-256("")`.

#![forbid(unsafe_code)]

use std::fmt;

use sha2::{Digest, Sha256};

mod tree;
mod verify;

pub use tree::{MemoryTree, RootBuilder};
pub use verify::{verify_consistency, verify_inclusion};

/// A SHA-256 hash: a leaf hash, an interior node hash or a tree root.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// Parses exactly 32 bytes; anything else is refused.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ProofError> {
        <[u8; 32]>::try_from(bytes)
            .map(Hash)
            .map_err(|_| ProofError::BadHashLength(bytes.len()))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why a proof could not be produced or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// A hash was not exactly 32 bytes long.
    #[error("hash must be 32 bytes, got {0}")]
    BadHashLength(usize),
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// Requested leaf index.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// The tree sizes are not `0 < size1 <= size2` (consistency) or exceed the tree.
    #[error("invalid tree sizes {size1} -> {size2}{detail}")]
    InvalidSizes {
        /// Older size.
        size1: u64,
        /// Newer size.
        size2: u64,
        /// Extra context.
        detail: &'static str,
    },
    /// The proof has the wrong number of hashes for these sizes.
    #[error("proof has {got} hashes, expected {expected}")]
    WrongProofLength {
        /// Length the sizes imply.
        expected: usize,
        /// Length received.
        got: usize,
    },
    /// The recomputed root differs from the claimed one.
    #[error("recomputed root does not match the expected root")]
    RootMismatch,
}

/// RFC 9162 §2.1.1: hash of a leaf's data.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    Hash(h.finalize().into())
}

/// RFC 9162 §2.1.1: hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left.0);
    h.update(right.0);
    Hash(h.finalize().into())
}

/// RFC 9162 §2.1.1: the root of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    Hash(Sha256::digest([]).into())
}

/// Largest power of two strictly smaller than `n` (`n >= 2`), the RFC's split point `k`.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// Number of hashes in an inclusion proof for `index` in a tree of `size` (RFC 9162 §2.1.3.1).
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    // Inner part: levels where the path and the last leaf's path diverge; border part: the
    // remaining right-edge levels where the node has a left sibling.
    let inner = (64 - (index ^ (size - 1)).leading_zeros()) as usize;
    let border = (index >> inner).count_ones() as usize;
    inner + border
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(hex_str: &str) -> Hash {
        Hash::from_slice(&hex::decode(hex_str).unwrap()).unwrap()
    }

    // VECTORS.md "Primitive hash checks" (from transparency-dev/merkle rfc6962_test.go).
    #[test]
    fn primitive_hashes() {
        assert_eq!(
            empty_root(),
            h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert_eq!(
            leaf_hash(b""),
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
        );
        assert_eq!(
            leaf_hash(b"L123456"),
            h("395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56")
        );
        // Level-1 node over reference leaves 0 and 1 (VECTORS.md, size-8 tree).
        assert_eq!(
            node_hash(&leaf_hash(b""), &leaf_hash(&[0x00])),
            h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")
        );
    }

    #[test]
    fn split_points() {
        for (n, k) in [
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 4),
            (8, 4),
            (9, 8),
            (1 << 40, 1 << 39),
        ] {
            assert_eq!(split_point(n), k, "n={n}");
        }
    }
}
