//! The portable export file and its offline verifier.
//!
//! An export is JSON Lines (UTF-8, `\n`-terminated):
//!
//! 1. a header: `{"format":"warden-ledger-export/1","origin":…,"tree_size":N,"checkpoint":…,"vkey":…}`
//!    where `checkpoint` is the signed note covering exactly `N` entries and `vkey` is the key
//!    the exporting server said it signs with (the verifier is given the key out of band and
//!    refuses a file whose `vkey` differs from it);
//! 2. `N` entry lines `{"index":i,"leaf_hash":…,"leaf":…}` in order, hashes and leaf bytes in
//!    standard base64.
//!
//! Verification recomputes every leaf hash from the leaf bytes, checks each leaf is a
//! canonical event whose `seq` is its index, rebuilds the tree root from scratch and checks
//! it against the checkpoint, whose signature is checked against the given key. An entry
//! whose bytes no longer match the hash recorded beside it is named by index.

use std::io::{BufRead, Write};

use base64::{Engine, engine::general_purpose::STANDARD};
use merkle::{Hash, RootBuilder, leaf_hash};
use serde::{Deserialize, Serialize};

use crate::{Checkpoint, Event, NoteVerifier};

/// The `format` value of export files this version writes and reads.
pub const FORMAT: &str = "warden-ledger-export/1";

/// First line of an export.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// Log origin.
    pub origin: String,
    /// Number of entries that follow.
    pub tree_size: u64,
    /// Signed checkpoint note at `tree_size`.
    pub checkpoint: String,
    /// Key the server reported; must equal the key the verifier was given.
    pub vkey: String,
}

#[derive(Serialize)]
struct EntryOut<'a> {
    index: u64,
    leaf_hash: String,
    leaf: &'a str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryIn<'a> {
    index: u64,
    #[serde(borrow)]
    leaf_hash: &'a str,
    #[serde(borrow)]
    leaf: &'a str,
}

/// Why an export did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Reading the file failed.
    #[error("cannot read export: {0}")]
    Io(String),
    /// The header line is missing or malformed.
    #[error("invalid export header: {0}")]
    Header(String),
    /// The checkpoint is not validly signed by the given key, or does not match the header.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A specific entry is bad.
    #[error("entry {index}: {reason}")]
    Entry {
        /// 0-based index of the first bad entry.
        index: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// Entries are missing or extra.
    #[error("export holds {got} entries but the checkpoint covers {expected}")]
    Count {
        /// Entries the checkpoint covers.
        expected: u64,
        /// Entries found.
        got: u64,
    },
    /// Every entry matched its recorded hash, yet the tree root differs from the signed one:
    /// entries and their hashes were altered together, or entries were reordered.
    #[error(
        "recomputed root {computed} does not match the signed root {signed}: entries were altered together with their hashes"
    )]
    RootMismatch {
        /// Root computed from the entries.
        computed: Hash,
        /// Root in the checkpoint.
        signed: Hash,
    },
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Log origin.
    pub origin: String,
    /// Entries verified.
    pub tree_size: u64,
    /// The signed root they produce.
    pub root: Hash,
}

/// Writes the header line.
pub fn write_header(out: &mut impl Write, header: &Header) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, header)?;
    out.write_all(b"\n")
}

/// Writes one entry line.
pub fn write_entry(
    out: &mut impl Write,
    index: u64,
    leaf_hash: &Hash,
    leaf: &[u8],
) -> std::io::Result<()> {
    let leaf = STANDARD.encode(leaf);
    serde_json::to_writer(
        &mut *out,
        &EntryOut {
            index,
            leaf_hash: STANDARD.encode(leaf_hash.as_bytes()),
            leaf: &leaf,
        },
    )?;
    out.write_all(b"\n")
}

/// Reads and checks the header and its checkpoint against `key`.
fn read_header(
    reader: &mut impl BufRead,
    key: &NoteVerifier,
) -> Result<(Header, Checkpoint), VerifyError> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| VerifyError::Io(e.to_string()))?;
    let line = line
        .strip_suffix('\n')
        .ok_or_else(|| VerifyError::Header("missing or unterminated header line".into()))?;
    let header: Header =
        serde_json::from_str(line).map_err(|e| VerifyError::Header(e.to_string()))?;
    if header.format != FORMAT {
        return Err(VerifyError::Header(format!(
            "unsupported format `{}`, expected `{FORMAT}`",
            header.format
        )));
    }
    if header.vkey != key.vkey() {
        return Err(VerifyError::Checkpoint(format!(
            "the export says it is signed by `{}`, not by the given key `{}`",
            header.vkey,
            key.vkey()
        )));
    }
    let text = key.verify(&header.checkpoint).map_err(|e| {
        VerifyError::Checkpoint(format!("not validly signed by `{}`: {e}", key.name()))
    })?;
    let cp = Checkpoint::parse(text).map_err(|e| VerifyError::Checkpoint(e.to_string()))?;
    if cp.origin != header.origin {
        return Err(VerifyError::Checkpoint(format!(
            "origin `{}` does not match the header's `{}`",
            cp.origin, header.origin
        )));
    }
    if cp.size != header.tree_size {
        return Err(VerifyError::Checkpoint(format!(
            "covers {} entries but the header says {}",
            cp.size, header.tree_size
        )));
    }
    Ok((header, cp))
}

/// Verifies an export from scratch against `key`. `progress(done, total)` is called now and
/// then. Returns the first problem found, naming the entry where one is to blame.
pub fn verify(
    mut reader: impl BufRead,
    key: &NoteVerifier,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Verified, VerifyError> {
    let (header, cp) = read_header(&mut reader, key)?;
    let total = header.tree_size;
    let mut builder = RootBuilder::new();
    let mut line = Vec::with_capacity(1024);
    let mut leaf = Vec::with_capacity(1024);
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| VerifyError::Io(e.to_string()))?;
        if n == 0 {
            break;
        }
        let index = builder.size();
        let bad = |reason: String| VerifyError::Entry { index, reason };
        if index >= total {
            return Err(VerifyError::Count {
                expected: total,
                got: index + 1,
            });
        }
        let body = line
            .strip_suffix(b"\n")
            .ok_or_else(|| bad("line is not newline-terminated (truncated file?)".into()))?;
        let entry: EntryIn<'_> =
            serde_json::from_slice(body).map_err(|e| bad(format!("malformed line: {e}")))?;
        if entry.index != index {
            return Err(bad(format!("line carries index {}", entry.index)));
        }
        let recorded = STANDARD
            .decode(entry.leaf_hash)
            .ok()
            .and_then(|h| Hash::from_slice(&h).ok())
            .ok_or_else(|| bad("leaf_hash is not a base64 32-byte hash".into()))?;
        leaf.clear();
        STANDARD
            .decode_vec(entry.leaf, &mut leaf)
            .map_err(|_| bad("leaf is not valid base64".into()))?;
        let computed = leaf_hash(&leaf);
        if computed != recorded {
            return Err(bad(
                "leaf bytes do not match the recorded leaf hash: the entry was altered".into(),
            ));
        }
        let event = Event::from_leaf(&leaf).map_err(|e| bad(e.to_string()))?;
        if event.seq != index {
            return Err(bad(format!("event says seq {}", event.seq)));
        }
        builder.push(computed);
        if builder.size() % 16_384 == 0 {
            progress(builder.size(), total);
        }
    }
    progress(builder.size(), total);
    if builder.size() != total {
        return Err(VerifyError::Count {
            expected: total,
            got: builder.size(),
        });
    }
    let computed = builder.root();
    if computed != cp.root {
        return Err(VerifyError::RootMismatch {
            computed,
            signed: cp.root,
        });
    }
    Ok(Verified {
        origin: cp.origin,
        tree_size: total,
        root: computed,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{NoteSigner, Outcome};

    fn export(n: u64) -> (Vec<u8>, NoteSigner) {
        let signer = NoteSigner::generate("test.example/ledger").unwrap();
        let mut tree = merkle::MemoryTree::new();
        let mut leaves = Vec::new();
        for seq in 0..n {
            let mut fields = BTreeMap::new();
            fields.insert("n".to_owned(), serde_json::Value::from(seq * 31));
            let leaf = Event {
                v: 1,
                seq,
                time: crate::event::format_time(1_000 * seq as i64),
                actor: "token:ops".into(),
                action: "api.request".into(),
                outcome: Outcome::Success,
                class_uid: 6003,
                fields,
            }
            .to_leaf()
            .unwrap();
            tree.push(leaf_hash(&leaf));
            leaves.push(leaf);
        }
        let cp = Checkpoint {
            origin: signer.name().into(),
            size: n,
            root: tree.root(),
        };
        let mut out = Vec::new();
        write_header(
            &mut out,
            &Header {
                format: FORMAT.into(),
                origin: signer.name().into(),
                tree_size: n,
                checkpoint: signer.sign(&cp.to_text()).unwrap(),
                vkey: signer.vkey(),
            },
        )
        .unwrap();
        for (i, leaf) in leaves.iter().enumerate() {
            write_entry(&mut out, i as u64, &leaf_hash(leaf), leaf).unwrap();
        }
        (out, signer)
    }

    fn run(bytes: &[u8], signer: &NoteSigner) -> Result<Verified, VerifyError> {
        verify(bytes, &signer.verifier(), &mut |_, _| {})
    }

    #[test]
    fn good_export_verifies() {
        let (bytes, signer) = export(37);
        let ok = run(&bytes, &signer).unwrap();
        assert_eq!(ok.tree_size, 37);
        let (empty, signer0) = export(0);
        assert_eq!(run(&empty, &signer0).unwrap().tree_size, 0);
    }

    #[test]
    fn wrong_key_is_refused() {
        let (bytes, _) = export(3);
        let other = NoteSigner::generate("test.example/ledger").unwrap();
        assert!(matches!(
            run(&bytes, &other),
            Err(VerifyError::Checkpoint(_))
        ));
    }

    /// Flipping any single byte anywhere in the file makes verification fail; when the byte
    /// is inside an entry line, the error names that entry (or, for a byte that turns one
    /// line into two, the entry the damage shows up in).
    #[test]
    fn every_single_byte_flip_is_detected() {
        let (bytes, signer) = export(9);
        let header_len = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        let line_of = |pos: usize| -> u64 {
            bytes[header_len..pos]
                .iter()
                .filter(|&&b| b == b'\n')
                .count() as u64
        };
        for pos in 0..bytes.len() {
            for flip in [0x01u8, 0x20, 0x80] {
                let mut bad = bytes.clone();
                bad[pos] ^= flip;
                let err = run(&bad, &signer)
                    .map(|_| format!("pos {pos} flip {flip:#x} unnoticed"))
                    .expect_err("tampering went unnoticed");
                if pos >= header_len {
                    let line = line_of(pos);
                    match err {
                        VerifyError::Entry { index, .. } => {
                            assert!(index == line || index == line + 1, "pos {pos}: {err}")
                        }
                        VerifyError::Count { .. } | VerifyError::Io(_) => {}
                        other => panic!("pos {pos}: unexpected {other}"),
                    }
                }
            }
        }
    }

    #[test]
    fn truncation_and_extra_lines_are_detected() {
        let (bytes, signer) = export(5);
        let text = String::from_utf8(bytes).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        let dropped_last = format!("{}\n", lines[..lines.len() - 1].join("\n"));
        assert!(matches!(
            run(dropped_last.as_bytes(), &signer),
            Err(VerifyError::Count {
                expected: 5,
                got: 4
            })
        ));
        lines.swap(2, 3);
        let swapped = format!("{}\n", lines.join("\n"));
        assert!(matches!(
            run(swapped.as_bytes(), &signer),
            Err(VerifyError::Entry { index: 1, .. })
        ));
        let extra = format!("{text}{}\n", text.lines().last().unwrap());
        assert!(matches!(
            run(extra.as_bytes(), &signer),
            Err(VerifyError::Count { .. })
        ));
    }
}
