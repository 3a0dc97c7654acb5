//! AWS stages, one module each; every function takes ready SDK clients. `calls` is the
//! table of every operation they make.

pub mod ami;
pub mod calls;
pub mod config;
pub mod copy;
pub mod iam;
pub mod images;
pub mod import;
pub mod multipart;
pub mod permissions;
pub mod preflight;
pub mod publisher;
pub mod regions;
pub mod s3;
pub mod ssm;
pub mod tags;
