//! AWS stages, one module each; every function takes ready SDK clients.

pub mod ami;
pub mod config;
pub mod copy;
pub mod iam;
pub mod images;
pub mod import;
pub mod initialize;
pub mod multipart;
pub mod permissions;
pub mod publish;
pub mod regions;
pub mod s3;
pub mod ssm;
