//! The workload side of identity: attesting a local caller from what the kernel says about
//! it, and the SPIFFE Workload API that hands it its SVIDs.
//!
//! Linux only: SO_PEERCRED on the Unix socket, then `/proc/<pid>`.

#![forbid(unsafe_code)]

pub mod api;
pub mod attest;
pub mod front;
pub mod registry;

pub use attest::{AttestError, Attestation, Attestor, ExeSample};
