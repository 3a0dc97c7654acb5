//! AWS stages, one module each; every function takes ready SDK clients. `calls` is the
//! table of every operation they make.

pub mod ami;
pub mod buffers;
pub mod calls;
pub mod config;
pub mod copy;
pub mod ebs_direct;
pub(crate) mod ebs_journal;
pub mod iam;
pub mod images;
pub mod import;
pub mod instances;
pub mod multipart;
pub mod permissions;
pub(crate) mod poll;
pub mod preflight;
pub mod propagation;
pub mod publisher;
pub mod regions;
pub mod s3;
pub mod ssm;
pub mod tags;
pub mod unchecked;
pub mod vmimport_role;
