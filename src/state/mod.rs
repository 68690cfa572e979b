//! What the running proxy knows about itself and that more than one part
//! needs: readiness ([`Health`]) and the per-domain figures ([`DomainStats`]).
//! The render pipeline and the proxy write them; `admin` reads them. Kept
//! apart so neither side imports the other.

pub mod health;
pub mod stats;

pub use health::Health;
pub use stats::{DomainExtra, DomainStats};
