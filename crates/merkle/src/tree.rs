//! Building trees and producing proofs.

use crate::{Hash, ProofError, empty_root, node_hash, split_point};

/// An append-only Merkle tree held in memory: every complete subtree hash at every level.
///
/// Memory: about 64 bytes per leaf (leaf hashes plus interior nodes). Root, inclusion and
/// consistency proofs for any earlier size cost `O(log n)` hash operations.
#[derive(Debug, Default, Clone)]
pub struct MemoryTree {
    // INVARIANT: levels[l][i] is the hash of the complete subtree of 2^l leaves starting at
    // leaf i * 2^l, and levels[l].len() == size >> l for every l.
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// The hash of leaf `index`, if the tree has it.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        let index = usize::try_from(index).ok()?;
        self.levels.first()?.get(index).copied()
    }

    /// Appends one leaf hash (already computed with [`crate::leaf_hash`]).
    pub fn push(&mut self, leaf: Hash) {
        let mut carry = leaf;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let row = &mut self.levels[level];
            row.push(carry);
            let n = row.len();
            if n % 2 == 1 {
                return;
            }
            carry = node_hash(&row[n - 2], &row[n - 1]);
            level += 1;
        }
    }

    /// Root of the whole tree.
    pub fn root(&self) -> Hash {
        // INVARIANT: size() is always a valid size.
        self.root_at(self.size()).unwrap_or_else(|_| empty_root())
    }

    /// Root of the tree as it was at `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        if size > self.size() {
            return Err(ProofError::InvalidSizes {
                size1: size,
                size2: self.size(),
                detail: ": size is beyond the tree",
            });
        }
        if size == 0 {
            return Ok(empty_root());
        }
        Ok(self.subtree(0, size))
    }

    /// Hash of leaves `[lo, hi)`, `lo < hi <= size`, where `[lo, hi)` is a range the RFC's
    /// recursion produces (lo aligned to a power of two at least `hi - lo`).
    fn subtree(&self, lo: u64, hi: u64) -> Hash {
        let n = hi - lo;
        if n.is_power_of_two() {
            let level = n.trailing_zeros() as usize;
            // INVARIANT: lo is a multiple of n and hi <= size, so the node exists.
            return self.levels[level][(lo >> level) as usize];
        }
        let k = split_point(n);
        node_hash(&self.subtree(lo, lo + k), &self.subtree(lo + k, hi))
    }

    /// RFC 9162 §2.1.3.1: the inclusion proof of leaf `index` in the tree of `size` leaves,
    /// ordered from the leaf towards the root.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        if size > self.size() {
            return Err(ProofError::InvalidSizes {
                size1: index,
                size2: size,
                detail: ": size is beyond the tree",
            });
        }
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let mut proof = Vec::with_capacity(crate::inclusion_proof_len(index, size));
        self.path(index, 0, size, &mut proof);
        Ok(proof)
    }

    // PATH(m, D[lo:hi]); m is relative to lo.
    fn path(&self, m: u64, lo: u64, hi: u64, out: &mut Vec<Hash>) {
        let n = hi - lo;
        if n == 1 {
            return;
        }
        let k = split_point(n);
        if m < k {
            self.path(m, lo, lo + k, out);
            out.push(self.subtree(lo + k, hi));
        } else {
            self.path(m - k, lo + k, hi, out);
            out.push(self.subtree(lo, lo + k));
        }
    }

    /// RFC 9162 §2.1.4.1: the consistency proof between sizes `size1` and `size2`
    /// (`0 < size1 <= size2 <= size`).
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, ProofError> {
        if size1 == 0 || size1 > size2 || size2 > self.size() {
            return Err(ProofError::InvalidSizes {
                size1,
                size2,
                detail: ": need 0 < size1 <= size2 <= tree size",
            });
        }
        let mut proof = Vec::new();
        self.subproof(size1, 0, size2, true, &mut proof);
        Ok(proof)
    }

    // SUBPROOF(m, D[lo:hi], b); m is relative to lo.
    fn subproof(&self, m: u64, lo: u64, hi: u64, b: bool, out: &mut Vec<Hash>) {
        let n = hi - lo;
        if m == n {
            if !b {
                out.push(self.subtree(lo, hi));
            }
            return;
        }
        let k = split_point(n);
        if m <= k {
            self.subproof(m, lo, lo + k, b, out);
            out.push(self.subtree(lo + k, hi));
        } else {
            self.subproof(m - k, lo + k, hi, false, out);
            out.push(self.subtree(lo, lo + k));
        }
    }
}

/// Computes a tree root from a stream of leaf hashes in `O(log n)` memory (a compact range).
/// Used by the offline verifier, which must not trust any precomputed interior node.
#[derive(Debug, Default, Clone)]
pub struct RootBuilder {
    // Roots of the maximal complete subtrees so far, left to right, with their heights.
    // INVARIANT: heights strictly decrease from left to right.
    stack: Vec<(Hash, u32)>,
    size: u64,
}

impl RootBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Leaves pushed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Adds the next leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = (leaf, 0u32);
        while let Some(&(left, height)) = self.stack.last() {
            if height != node.1 {
                break;
            }
            self.stack.pop();
            node = (node_hash(&left, &node.0), height + 1);
        }
        self.stack.push(node);
        self.size += 1;
    }

    /// The root of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.stack.iter().rev();
        let Some(&(mut acc, _)) = iter.next() else {
            return empty_root();
        };
        for (left, _) in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{leaf_hash, verify_consistency, verify_inclusion};

    /// The eight reference leaves of VECTORS.md.
    fn reference_leaves() -> Vec<Vec<u8>> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|h| hex::decode(h).unwrap())
        .collect()
    }

    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn h(s: &str) -> Hash {
        Hash::from_slice(&hex::decode(s).unwrap()).unwrap()
    }

    #[test]
    fn reference_roots_for_every_size() {
        let mut tree = MemoryTree::new();
        let mut builder = RootBuilder::new();
        assert_eq!(tree.root(), h(ROOTS[0]));
        assert_eq!(builder.root(), h(ROOTS[0]));
        for (i, leaf) in reference_leaves().iter().enumerate() {
            tree.push(leaf_hash(leaf));
            builder.push(leaf_hash(leaf));
            assert_eq!(tree.root(), h(ROOTS[i + 1]), "memory tree size {}", i + 1);
            assert_eq!(builder.root(), h(ROOTS[i + 1]), "builder size {}", i + 1);
        }
        for (size, root) in ROOTS.iter().enumerate() {
            assert_eq!(
                tree.root_at(size as u64).unwrap(),
                h(root),
                "root_at({size})"
            );
        }
        assert!(tree.root_at(9).is_err());
    }

    // VECTORS.md proofs (upstream cmd/proofgen), written out in full.
    #[test]
    fn reference_inclusion_proofs() {
        let mut tree = MemoryTree::new();
        for leaf in reference_leaves() {
            tree.push(leaf_hash(&leaf));
        }
        let l1 = [
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        ];
        let l2 = [
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ];
        let leaf = |i: usize| leaf_hash(&reference_leaves()[i]);
        let cases: Vec<(u64, u64, Vec<Hash>)> = vec![
            (0, 1, vec![]),
            (0, 8, vec![leaf(1), h(l1[1]), h(l2[1])]),
            (5, 8, vec![leaf(4), h(l1[3]), h(l2[0])]),
            (2, 3, vec![h(l1[0])]),
            (1, 5, vec![leaf(0), h(l1[1]), leaf(4)]),
        ];
        for (index, size, want) in cases {
            let got = tree.inclusion_proof(index, size).unwrap();
            assert_eq!(got, want, "inclusion {index}/{size}");
            let root = tree.root_at(size).unwrap();
            verify_inclusion(index, size, &leaf(index as usize), &got, &root).unwrap();
        }
    }

    #[test]
    fn reference_consistency_proofs() {
        let mut tree = MemoryTree::new();
        for leaf in reference_leaves() {
            tree.push(leaf_hash(&leaf));
        }
        let leaf = |i: usize| leaf_hash(&reference_leaves()[i]);
        let cases: Vec<(u64, u64, Vec<Hash>)> = vec![
            (1, 1, vec![]),
            (
                1,
                8,
                vec![
                    leaf(1),
                    h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                    h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
                ],
            ),
            (
                6,
                8,
                vec![
                    h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                    h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
                ],
            ),
            (
                2,
                5,
                vec![
                    h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                    leaf(4),
                ],
            ),
            (
                6,
                7,
                vec![
                    h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                    leaf(6),
                    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
                ],
            ),
            (
                4,
                8,
                vec![h(
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                )],
            ),
        ];
        for (m, n, want) in cases {
            let got = tree.consistency_proof(m, n).unwrap();
            assert_eq!(got, want, "consistency {m}->{n}");
            let (r1, r2) = (tree.root_at(m).unwrap(), tree.root_at(n).unwrap());
            verify_consistency(m, n, &r1.0, &r2.0, &got).unwrap();
        }
    }

    /// Every proof the tree produces verifies, and has the length the RFC implies.
    #[test]
    fn all_proofs_round_trip_up_to_64_leaves() {
        let mut tree = MemoryTree::new();
        for i in 0u32..64 {
            tree.push(leaf_hash(&i.to_be_bytes()));
        }
        for size in 1..=64u64 {
            let root = tree.root_at(size).unwrap();
            for index in 0..size {
                let proof = tree.inclusion_proof(index, size).unwrap();
                assert_eq!(proof.len(), crate::inclusion_proof_len(index, size));
                let leaf = leaf_hash(&(index as u32).to_be_bytes());
                verify_inclusion(index, size, &leaf, &proof, &root).unwrap();
                // A wrong leaf never verifies.
                let other = leaf_hash(b"not a leaf");
                assert!(verify_inclusion(index, size, &other, &proof, &root).is_err());
            }
            for size1 in 1..=size {
                let proof = tree.consistency_proof(size1, size).unwrap();
                let root1 = tree.root_at(size1).unwrap();
                verify_consistency(size1, size, &root1.0, &root.0, &proof).unwrap();
                if size1 < size {
                    let wrong = tree.root_at(size1 - 1).unwrap();
                    assert!(verify_consistency(size1, size, &wrong.0, &root.0, &proof).is_err());
                }
            }
        }
    }

    #[test]
    fn out_of_range_requests_are_errors() {
        let mut tree = MemoryTree::new();
        for i in 0u8..5 {
            tree.push(leaf_hash(&[i]));
        }
        assert!(matches!(
            tree.inclusion_proof(5, 5),
            Err(ProofError::IndexOutOfRange { .. })
        ));
        assert!(tree.inclusion_proof(0, 6).is_err());
        assert!(tree.consistency_proof(0, 3).is_err());
        assert!(tree.consistency_proof(4, 3).is_err());
        assert!(tree.consistency_proof(3, 6).is_err());
    }
}
