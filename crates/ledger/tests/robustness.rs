//! Parsers of outside input (leaves, signed notes, checkpoints, keys, export files) never panic
//! on mutated input, and a mutated input is either refused or means exactly what it says.
//! A deterministic mutation loop (xorshift), so failures reproduce.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

use std::collections::BTreeMap;

use ledger::{Checkpoint, Event, NoteSigner, NoteVerifier, Outcome, export};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random edit: flip bits, overwrite with an interesting byte, insert, delete, duplicate.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(3) {
        let pos = rng.below(out.len() + 1);
        match rng.below(5) {
            0 if pos < out.len() => out[pos] ^= 1 << rng.below(8),
            1 if pos < out.len() => {
                out[pos] = *b"{}[]\",:\\0-+.e \n\xff\x00"
                    .get(rng.below(18))
                    .unwrap_or(&b'x')
            }
            2 => out.insert(pos, (rng.next() & 0xff) as u8),
            3 if pos < out.len() => {
                out.remove(pos);
            }
            _ => {
                let end = (pos + rng.below(16)).min(out.len());
                let chunk = out[pos..end].to_vec();
                out.splice(pos..pos, chunk);
            }
        }
    }
    out
}

fn sample_leaf() -> Vec<u8> {
    let mut fields = BTreeMap::new();
    fields.insert("path".to_owned(), "/v1/x".into());
    fields.insert("status".to_owned(), 200.into());
    fields.insert(
        "nested".to_owned(),
        serde_json::json!({"a": [1, "b", null]}),
    );
    Event {
        v: 1,
        seq: 3,
        time: "2026-11-29T23:00:00.000Z".into(),
        actor: "token:ops".into(),
        action: "api.request".into(),
        outcome: Outcome::Success,
        class_uid: 6003,
        fields,
    }
    .to_leaf()
    .unwrap()
}

#[test]
fn leaf_decoder_refuses_or_round_trips() {
    let leaf = sample_leaf();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let input = mutate(&mut rng, &leaf);
        if let Ok(event) = Event::from_leaf(&input) {
            // Accepted only if it is the canonical encoding of what it decodes to.
            assert_eq!(event.to_leaf().unwrap(), input);
        }
    }
}

#[test]
fn note_key_and_checkpoint_parsers_never_panic() {
    let signer = NoteSigner::generate("example.org/warden/ledger").unwrap();
    let cp = Checkpoint {
        origin: signer.name().into(),
        size: 12345,
        root: merkle::empty_root(),
    };
    let note = signer.sign(&cp.to_text()).unwrap();
    let verifier = signer.verifier();
    let vkey = signer.vkey();
    let skey = signer.to_skey();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    for _ in 0..5_000 {
        let bytes = mutate(&mut rng, note.as_bytes());
        if let Ok(text) = std::str::from_utf8(&bytes) {
            if let Ok(body) = verifier.verify(text) {
                // A valid signature over a changed body would be a forgery.
                assert_eq!(body, cp.to_text());
            }
            let _ = Checkpoint::parse(text);
        }
        for key in [vkey.as_bytes(), skey.as_bytes()] {
            let bytes = mutate(&mut rng, key);
            if let Ok(text) = std::str::from_utf8(&bytes) {
                let _ = NoteVerifier::from_vkey(text);
                let _ = NoteSigner::from_skey(text);
            }
        }
    }
}

#[test]
fn export_verifier_refuses_every_mutation_it_does_not_ignore() {
    let signer = NoteSigner::generate("example.org/warden/ledger").unwrap();
    let mut tree = merkle::MemoryTree::new();
    let mut body = Vec::new();
    for seq in 0..6u64 {
        let mut fields = BTreeMap::new();
        fields.insert("n".to_owned(), seq.into());
        let leaf = Event {
            v: 1,
            seq,
            time: "2026-11-29T23:00:00.000Z".into(),
            actor: "a".into(),
            action: "x".into(),
            outcome: Outcome::Success,
            class_uid: 6003,
            fields,
        }
        .to_leaf()
        .unwrap();
        let h = merkle::leaf_hash(&leaf);
        tree.push(h);
        export::write_entry(&mut body, seq, &h, &leaf).unwrap();
    }
    let cp = Checkpoint {
        origin: signer.name().into(),
        size: 6,
        root: tree.root(),
    };
    let mut file = Vec::new();
    export::write_header(
        &mut file,
        &export::Header {
            format: export::FORMAT.into(),
            origin: signer.name().into(),
            tree_size: 6,
            checkpoint: signer.sign(&cp.to_text()).unwrap(),
            vkey: signer.vkey(),
        },
    )
    .unwrap();
    file.extend_from_slice(&body);
    let verifier = signer.verifier();
    assert!(export::verify(&file[..], &verifier, &mut |_, _| {}).is_ok());
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    for _ in 0..5_000 {
        let input = mutate(&mut rng, &file);
        if export::verify(&input[..], &verifier, &mut |_, _| {}).is_ok() {
            // Only edits that change no meaning may pass (e.g. none here: JSON whitespace in
            // a header or entry line is allowed by the format, so compare the semantics).
            let lines: Vec<&[u8]> = input.split(|b| *b == b'\n').collect();
            let orig: Vec<&[u8]> = file.split(|b| *b == b'\n').collect();
            assert_eq!(lines.len(), orig.len());
            for (a, b) in lines.iter().zip(&orig).skip(1) {
                if a.is_empty() && b.is_empty() {
                    continue;
                }
                let a: serde_json::Value = serde_json::from_slice(a).unwrap();
                let b: serde_json::Value = serde_json::from_slice(b).unwrap();
                assert_eq!(a, b, "a meaningful change went unnoticed");
            }
        }
    }
}
