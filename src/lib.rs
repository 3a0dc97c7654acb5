//! imgpub: publish disk images as AWS AMIs.
//!
//! The library holds every stage as a function that takes ready SDK clients and returns a
//! typed result; the `imgpub` binary only parses flags and prints.

pub mod aws;
pub mod error;
pub mod image;
pub mod progress;
pub mod sha256;

pub use error::{Error, Result};
