//! Warden's tamper-evident audit ledger: an append-only RFC 6962 Merkle log of audit events
//! with signed C2SP checkpoints, inclusion and consistency proofs, group-committed durable
//! appends, and a portable export that anyone can verify offline.
//!
//! - [`event`]: the audit event and its canonical (RFC 8785) leaf encoding.
//! - [`note`]: C2SP signed notes and checkpoints (Ed25519).
//! - [`export`]: the export file format and the offline verifier.
//! - [`Ledger`]: the live log over a [`store::Store`], with group commit.

#![forbid(unsafe_code)]

mod canonical;
pub mod event;
pub mod export;
mod log;
pub mod note;

pub use canonical::CanonicalJson;
pub use event::{Event, NewEvent, OcsfClass, Outcome};
pub use log::{Ledger, LedgerConfig, LedgerStats, Receipt, SignedCheckpoint, StoredEntry};
pub use note::{Checkpoint, NoteSigner, NoteVerifier};

/// Errors from the ledger.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The event to append is malformed (a bug in the caller, or bad outside input).
    #[error("invalid audit event: {0}")]
    InvalidEvent(String),
    /// Leaf bytes are not a canonical event.
    #[error("invalid leaf: {0}")]
    BadLeaf(String),
    /// A key could not be parsed.
    #[error("{0}")]
    BadKey(String),
    /// A signed note could not be parsed.
    #[error("invalid signed note: {0}")]
    BadNote(String),
    /// No valid signature by the expected key.
    #[error("no valid signature by the expected key")]
    BadSignature,
    /// A proof request was out of range.
    #[error("{0}")]
    Proof(#[from] merkle::ProofError),
    /// The stored log does not match what was signed earlier: refuse to go on.
    #[error("ledger integrity failure: {0}")]
    Integrity(String),
    /// The store failed; the operation was not recorded and must not be acknowledged.
    #[error("audit store unavailable: {0}")]
    Store(String),
    /// The ledger is shutting down or its writer stopped.
    #[error("ledger is not accepting appends")]
    Closed,
}

impl From<store::StoreError> for LedgerError {
    fn from(e: store::StoreError) -> Self {
        LedgerError::Store(e.to_string())
    }
}
