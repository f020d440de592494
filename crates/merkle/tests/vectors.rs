//! Runs every RFC 6962 inclusion and consistency vector under `shared/testdata/merkle`
//! (transparency-dev/merkle's corpus): each `happy-path` case must verify, each
//! `wantErr: true` case must be rejected.
//!
//! The folder is found through `WARDEN_MERKLE_VECTORS` (mandatory when set: a wrong path
//! fails, as `.ci/run` wants) or `../shared/testdata/merkle` beside the project root (skipped
//! with a message when absent, so a fresh clone's `cargo test` still passes).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::path::{Path, PathBuf};

use base64::{Engine, engine::general_purpose::STANDARD};
use merkle::{Hash, ProofError, verify_consistency, verify_inclusion};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InclusionCase {
    leaf_idx: u64,
    tree_size: u64,
    root: Option<String>,
    leaf_hash: Option<String>,
    proof: Option<Vec<String>>,
    want_err: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConsistencyCase {
    size1: u64,
    size2: u64,
    root1: Option<String>,
    root2: Option<String>,
    proof: Option<Vec<String>>,
    want_err: bool,
}

fn vectors_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("WARDEN_MERKLE_VECTORS") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.is_dir(),
            "WARDEN_MERKLE_VECTORS={} is not a directory",
            dir.display()
        );
        return Some(dir);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/merkle");
    if dir.is_dir() {
        Some(dir)
    } else {
        // Past the harness's output capture, so a plain `cargo test` shows it.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: Merkle vectors not found at {} (set WARDEN_MERKLE_VECTORS)",
            dir.display()
        );
        None
    }
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    out.sort();
}

fn hash(b64: Option<&str>) -> Result<Hash, ProofError> {
    let bytes = STANDARD
        .decode(b64.unwrap_or_default())
        .map_err(|_| ProofError::BadHashLength(0))?;
    Hash::from_slice(&bytes)
}

fn hashes(list: &Option<Vec<String>>) -> Result<Vec<Hash>, ProofError> {
    list.iter().flatten().map(|s| hash(Some(s))).collect()
}

fn run_inclusion(case: &InclusionCase) -> Result<(), ProofError> {
    let root = hash(case.root.as_deref())?;
    let leaf = hash(case.leaf_hash.as_deref())?;
    let proof = hashes(&case.proof)?;
    verify_inclusion(case.leaf_idx, case.tree_size, &leaf, &proof, &root)
}

fn run_consistency(case: &ConsistencyCase) -> Result<(), ProofError> {
    let bytes = |b64: &Option<String>| {
        STANDARD
            .decode(b64.as_deref().unwrap_or_default())
            .map_err(|_| ProofError::BadHashLength(0))
    };
    let (root1, root2) = (bytes(&case.root1)?, bytes(&case.root2)?);
    let proof = hashes(&case.proof)?;
    verify_consistency(case.size1, case.size2, &root1, &root2, &proof)
}

/// Runs every JSON case under `kind/`, comparing the verifier's verdict with `wantErr`.
fn run_corpus<C: serde::de::DeserializeOwned>(
    kind: &str,
    min_files: usize,
    want_err: fn(&C) -> bool,
    run: fn(&C) -> Result<(), ProofError>,
) {
    let Some(dir) = vectors_dir() else { return };
    let mut files = Vec::new();
    json_files(&dir.join(kind), &mut files);
    assert!(
        files.len() >= min_files,
        "expected the full {kind} corpus, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let case: C = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        let result = run(&case);
        if result.is_err() != want_err(&case) {
            failures.push(format!(
                "{}: wantErr={} got {result:?}",
                file.display(),
                want_err(&case)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{} {kind} vectors passed", files.len());
}

#[test]
fn inclusion_vectors() {
    run_corpus::<InclusionCase>("inclusion", 80, |c| c.want_err, run_inclusion);
}

#[test]
fn consistency_vectors() {
    run_corpus::<ConsistencyCase>("consistency", 90, |c| c.want_err, run_consistency);
}
