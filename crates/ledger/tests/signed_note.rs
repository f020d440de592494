//! C2SP signed notes: bounded in size and signature lines, and accepted or refused exactly as
//! `signed_note` (Cloudflare's port of Go's `golang.org/x/mod/sumdb/note`) accepts or refuses
//! them, with the same text.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

use ledger::note::{MAX_NOTE_BYTES, MAX_SIGNATURES};
use ledger::{LedgerError, NoteSigner, NoteVerifier};
use signed_note::{Note, StandardSigner, StandardVerifier, Verifier, VerifierList};

const NAME: &str = "test.example/warden/ledger";

/// A Warden key, and the same key as the independent implementation's signer.
fn keys() -> (NoteSigner, StandardSigner) {
    let warden = NoteSigner::generate(NAME).unwrap();
    let other = StandardSigner::new(&warden.to_skey()).unwrap();
    (warden, other)
}

/// `text` signed by `signer` with the independent implementation (which signs any text), then
/// `extra` appended to the signature block.
fn note_with(signer: &StandardSigner, text: &str, extra: &str) -> String {
    let mut note = Note::new(text.as_bytes(), &[]).unwrap();
    note.add_sigs(&[signer as &dyn signed_note::Signer])
        .unwrap();
    String::from_utf8(note.to_bytes()).unwrap() + extra
}

/// `text` signed by `signer`'s key whatever it holds (neither implementation signs a text
/// with control characters).
fn sign_anything(signer: &NoteSigner, text: &str) -> String {
    use base64::{Engine, engine::general_purpose::STANDARD};
    use ed25519_dalek::Signer as _;
    let skey = signer.to_skey();
    let raw = STANDARD
        .decode(skey.splitn(5, '+').nth(4).unwrap())
        .unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&raw[1..].try_into().unwrap());
    let id = u32::from_str_radix(skey.split('+').nth(3).unwrap(), 16).unwrap();
    let mut sig = id.to_be_bytes().to_vec();
    sig.extend_from_slice(&key.sign(text.as_bytes()).to_bytes());
    format!(
        "{text}\n\u{2014} {} {}\n",
        signer.name(),
        STANDARD.encode(sig)
    )
}

/// A well-formed signature line by some other key.
fn other_line(i: usize) -> String {
    format!("\u{2014} other.example/{i} AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n")
}

/// Warden's answer and the independent implementation's for `note` under `verifier`'s key.
fn both(verifier: &NoteVerifier, note: &str) -> (Result<String, LedgerError>, Option<String>) {
    let warden = verifier.verify(note).map(str::to_owned);
    let reference = StandardVerifier::new(&verifier.vkey()).unwrap();
    let list = VerifierList::new(vec![Box::new(reference) as Box<dyn Verifier>]);
    let other = Note::from_bytes(note.as_bytes())
        .ok()
        .filter(|n| n.verify(&list).is_ok())
        .map(|n| String::from_utf8(n.text().to_vec()).unwrap());
    (warden, other)
}

/// At most 100 signature lines: a note whose first line is a good signature by the key, then
/// 100 lines by other keys, is refused before any signature is checked.
#[test]
fn more_than_100_signature_lines_are_refused() {
    let (warden, other) = keys();
    let v = warden.verifier();
    let text = "a\n";
    let lines = |n: usize| (0..n).map(other_line).collect::<String>();
    let at_cap = note_with(&other, text, &lines(MAX_SIGNATURES - 1));
    assert_eq!(at_cap.matches('\u{2014}').count(), MAX_SIGNATURES);
    assert_eq!(v.verify(&at_cap).unwrap(), text);
    let over = note_with(&other, text, &lines(MAX_SIGNATURES));
    let err = v.verify(&over).unwrap_err();
    assert!(
        matches!(&err, LedgerError::BadNote(m) if m.contains("more than 100 signature lines")),
        "{err}"
    );
    // Ours last, after 100 others: refused too.
    let mut last = String::from("a\n\n");
    last.push_str(&lines(MAX_SIGNATURES));
    last.push_str(note_with(&other, text, "").split("\n\n").nth(1).unwrap());
    assert!(v.verify(&last).is_err());
    assert_eq!(both(&v, &over).1, None);
    assert_eq!(both(&v, &at_cap).1.as_deref(), Some(text));
}

/// At most 1,000,000 bytes in all: Warden neither signs nor verifies a longer note, even one
/// whose signature is good.
#[test]
fn notes_over_the_size_cap_are_refused() {
    let (warden, other) = keys();
    let v = warden.verifier();
    // The largest text whose note fits: the note adds a blank line and one signature line.
    // "— " (an em dash is 3 bytes), the name, a space, base64 of 68 bytes, a newline.
    let sig_line = 4 + NAME.len() + 1 + 92 + 1;
    let fits = "x".repeat(MAX_NOTE_BYTES - sig_line - 2) + "\n";
    let note = warden.sign(&fits).unwrap();
    assert_eq!(note.len(), MAX_NOTE_BYTES);
    assert_eq!(v.verify(&note).unwrap(), fits);
    let longer = "x".repeat(MAX_NOTE_BYTES - sig_line - 1) + "\n";
    assert!(matches!(warden.sign(&longer), Err(LedgerError::BadNote(_))));
    let signed_elsewhere = note_with(&other, &longer, "");
    assert_eq!(signed_elsewhere.len(), MAX_NOTE_BYTES + 1);
    assert!(matches!(
        v.verify(&signed_elsewhere),
        Err(LedgerError::BadNote(_))
    ));
    assert_eq!(both(&v, &signed_elsewhere).1, None);
    // A good small note padded past the cap by a long line of another key's.
    let padded = note_with(
        &other,
        "a\n",
        &format!("\u{2014} {} AAAAAAAA\n", "n".repeat(MAX_NOTE_BYTES)),
    );
    assert!(matches!(v.verify(&padded), Err(LedgerError::BadNote(_))));
}

/// The spec's other rules, each as Warden and the independent implementation apply them:
/// control characters, malformed lines of other keys, a short or long signature by the key,
/// duplicates, signatures by unknown keys only.
#[test]
fn agrees_with_an_independent_implementation() {
    let (warden, other) = keys();
    let v = warden.verifier();
    let good = note_with(&other, "origin\n5\nAAAA\n", "");
    let sig_line = good.split("\n\n").nth(1).unwrap().to_owned();
    let (_, stranger) = keys_named("other.example/log");
    let cases: Vec<(&str, String, bool)> = vec![
        ("good", good.clone(), true),
        (
            "good, signed here",
            sign_anything(&warden, "origin\n5\nAAAA\n"),
            true,
        ),
        (
            "control character in the text",
            sign_anything(&warden, "a\rb\n"),
            false,
        ),
        ("tab in the text", sign_anything(&warden, "a\tb\n"), false),
        (
            "others' signature before ours",
            note_with(&other, "a\n", "").replacen("\n\n", &format!("\n\n{}", other_line(1)), 1),
            true,
        ),
        (
            "others' line with bad base64",
            format!("{good}\u{2014} other.example !!!\n"),
            false,
        ),
        (
            "others' line with an empty signature",
            format!("{good}\u{2014} other.example \n"),
            false,
        ),
        (
            "others' line with a 4-byte signature",
            format!("{good}\u{2014} other.example AAAAAA==\n"),
            false,
        ),
        (
            "others' line with a bad name",
            format!("{good}\u{2014} a+b AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\n"),
            false,
        ),
        (
            "line without an em dash",
            format!("{good}- other.example AAAAAAAA\n"),
            false,
        ),
        (
            "duplicate good signature",
            format!("{good}{sig_line}"),
            true,
        ),
        (
            "bad signature by the key, then a good one",
            {
                let mut bad = sig_line.clone();
                let at = bad.len() - 6;
                bad.replace_range(at..at + 1, if &bad[at..at + 1] == "A" { "B" } else { "A" });
                format!("origin\n5\nAAAA\n\n{bad}{sig_line}")
            },
            false,
        ),
        (
            "good signature, then a bad one by the key",
            {
                let mut bad = sig_line.clone();
                let at = bad.len() - 6;
                bad.replace_range(at..at + 1, if &bad[at..at + 1] == "A" { "B" } else { "A" });
                format!("{good}{bad}")
            },
            true,
        ),
        (
            "only an unknown key's signature",
            note_with(&stranger, "a\n", ""),
            false,
        ),
        ("no final newline", good.trim_end().to_owned(), false),
        ("no blank line", good.replacen("\n\n", "\n", 1), false),
        ("empty signature block", "a\n\n".to_owned(), false),
        ("text altered", good.replacen("origin", "origen", 1), false),
    ];
    for (what, note, accepted) in cases {
        let (warden_says, other_says) = both(&v, &note);
        assert_eq!(warden_says.is_ok(), accepted, "{what}: {warden_says:?}");
        assert_eq!(warden_says.ok(), other_says, "{what}");
    }
}

fn keys_named(name: &str) -> (NoteSigner, StandardSigner) {
    let warden = NoteSigner::generate(name).unwrap();
    let other = StandardSigner::new(&warden.to_skey()).unwrap();
    (warden, other)
}

/// Verifier keys: the key id's hex digits are read in either case (as Go does); everything
/// else about a key is the same for both implementations.
#[test]
fn verifier_keys_agree() {
    const VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    for vkey in [
        VKEY.to_owned(),
        VKEY.replace("530d903a", "530D903A"),
        VKEY.replace("530d903a", "530d903b"),
        VKEY.replace("530d903a", "530d903"),
        VKEY.replace("+Aeky", "+Beky"),
        VKEY.replace("example.com/foo", "example.com/foo bar"),
        "example.com/foo+530d903a".to_owned(),
    ] {
        assert_eq!(
            NoteVerifier::from_vkey(&vkey).is_ok(),
            StandardVerifier::new(&vkey).is_ok(),
            "{vkey}"
        );
    }
    assert!(NoteVerifier::from_vkey(&VKEY.replace("530d903a", "530D903A")).is_ok());
}

/// Warden signs only what it can verify: no control characters in the text.
#[test]
fn sign_refuses_control_characters() {
    let (warden, _) = keys();
    assert!(warden.sign("a\rb\n").is_err());
    assert!(warden.sign("a\u{7f}b\n").is_ok());
    let note = warden.sign("a\u{7f}b\n").unwrap();
    assert_eq!(warden.verifier().verify(&note).unwrap(), "a\u{7f}b\n");
}
