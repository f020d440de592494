//! The workload side of identity: attesting a local caller from what the kernel says about
//! it. (The SPIFFE Workload API server that uses this comes next; see issue 3.)
//!
//! Linux only: SO_PEERCRED on the Unix socket, then `/proc/<pid>`.

#![forbid(unsafe_code)]

pub mod attest;

pub use attest::{AttestError, Attestation, Attestor};
