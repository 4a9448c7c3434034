//! ketch-core: one Ketch member as a library.

pub mod config;
pub mod member;

pub use member::{Member, StartError};
