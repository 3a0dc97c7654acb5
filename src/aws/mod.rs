//! AWS stages, one module each; every function takes ready SDK clients. `calls` is the
//! table of every operation they make.

pub(crate) mod ami;
pub(crate) mod block_map;
pub(crate) mod buffers;
pub(crate) mod calls;
pub(crate) mod config;
pub(crate) mod copy;
pub(crate) mod ebs_direct;
pub(crate) mod ebs_journal;
pub(crate) mod ebs_read;
pub(crate) mod iam;
pub(crate) mod images;
pub(crate) mod import;
pub(crate) mod instances;
pub(crate) mod multipart;
pub(crate) mod permissions;
pub(crate) mod poll;
pub(crate) mod preflight;
pub(crate) mod propagation;
pub(crate) mod publisher;
pub(crate) mod recycle_bin;
pub(crate) mod regions;
pub(crate) mod s3;
pub(crate) mod ssm;
pub(crate) mod tags;
pub(crate) mod unchecked;
pub(crate) mod usage_reports;
pub(crate) mod vmimport_role;

/// Whether a run changed an item: the `status` of the JSON lines of the commands that
/// bring something to a state (grant, ensure-public, initialize, create-publisher,
/// upload-object).
#[derive(Debug, Clone, Copy, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Changed,
    Unchanged,
}

impl Status {
    pub(crate) fn of(changed: bool) -> Status {
        match changed {
            true => Status::Changed,
            false => Status::Unchanged,
        }
    }
}
