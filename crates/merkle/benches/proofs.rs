//! Inclusion and consistency proof generation on large in-memory trees.
//!
//! `cargo bench -p merkle --bench proofs` (target: < 100 µs per proof at 1M and 10M entries).

#![allow(missing_docs, clippy::unwrap_used, reason = "benchmark harness")]

use criterion::{BenchmarkId, Criterion, black_box, criterion_group, criterion_main};
use merkle::{MemoryTree, leaf_hash, verify_inclusion};

fn build(n: u64) -> MemoryTree {
    let mut tree = MemoryTree::new();
    for i in 0..n {
        tree.push(leaf_hash(&i.to_be_bytes()));
    }
    tree
}

fn proofs(c: &mut Criterion) {
    let mut group = c.benchmark_group("proofs");
    for n in [1_000_000u64, 10_000_000] {
        let tree = build(n);
        // Odd sizes exercise the right-edge (incomplete subtree) path.
        let size = n - 3;
        let root = tree.root_at(size).unwrap();
        let mut i = 0u64;
        group.bench_with_input(BenchmarkId::new("inclusion", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 7_919) % size;
                black_box(tree.inclusion_proof(black_box(i), size).unwrap())
            })
        });
        group.bench_with_input(BenchmarkId::new("consistency", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 7_919) % size + 1;
                black_box(tree.consistency_proof(black_box(i), size).unwrap())
            })
        });
        let proof = tree.inclusion_proof(12_345, size).unwrap();
        let leaf = leaf_hash(&12_345u64.to_be_bytes());
        group.bench_with_input(BenchmarkId::new("verify_inclusion", n), &n, |b, _| {
            b.iter(|| verify_inclusion(12_345, size, &leaf, black_box(&proof), &root).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("root_at", n), &n, |b, _| {
            b.iter(|| black_box(tree.root_at(black_box(size)).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, proofs);
criterion_main!(benches);
