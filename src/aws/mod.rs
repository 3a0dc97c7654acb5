//! AWS stages, one module each; every function takes ready SDK clients.

pub mod config;
pub mod iam;
pub mod initialize;
pub mod s3;
