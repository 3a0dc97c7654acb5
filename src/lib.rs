//! imgpub: publish disk images as AWS AMIs.
//!
//! Layers (docs/architecture.md): the `imgpub` binary parses flags and prints; `commands`
//! holds each command's validate → plan → check → apply and the one driver that runs them;
//! `aws` holds the stages, each a function that takes ready SDK clients and returns a typed
//! result; `image` inspects files locally.

pub mod aws;
mod blocking;
pub mod commands;
pub mod error;
pub mod image;
pub mod names;
pub mod progress;
pub mod sha256;

pub use error::{Error, ErrorKind, Result};
