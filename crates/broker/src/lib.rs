//! The credential broker's logic: what a lease is, how scopes and delegation narrow, the
//! dynamic PostgreSQL engine (login roles created from operator templates and dropped on
//! revocation), and envelope encryption of upstream secrets held in custody.
//!
//! The server orchestrates (policy, ledger, store); this crate knows credentials.

#![forbid(unsafe_code)]

pub mod custody;
mod error;
pub mod lease;
pub mod postgres;
pub mod scope;

pub use error::{BrokerError, Result};
