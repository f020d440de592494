//! Agent identity: SPIFFE IDs and trust domains, parsed exactly as the SPIFFE-ID
//! specification says (SPIFFE-ID.md §2).
//!
//! Pure: no I/O. Holding a [`SpiffeId`] or a [`TrustDomain`] means it is valid; nothing past
//! the boundary handles them as strings.

#![forbid(unsafe_code)]

pub mod access;
pub mod ca;
pub mod deny;
mod id;
pub mod jwt;
pub mod seal;
mod selector;
pub mod trust;
pub mod x509;

pub use id::{IdError, MAX_ID_LEN, MAX_TRUST_DOMAIN_LEN, SpiffeId, TrustDomain};
pub use selector::{Selector, SelectorError, matches};
