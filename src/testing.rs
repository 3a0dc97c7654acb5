//! Not API: what the integration tests check below the façade (the flag-value parsers, the
//! image inspectors, the SHA-256 kernels, the IAM calls table and the policies built from
//! it). Hidden from the docs, and it changes with any commit.

pub mod image {
    pub use crate::image::{
        check_direct, import_format, inspect, Disk, Format, Reader, BLOCK_SIZE,
    };
}

pub mod sha256 {
    pub use crate::sha256::{Kernel, Sha256Lanes};
}

pub mod s3 {
    pub use crate::aws::s3::{parse_bucket_name, S3Object, S3Prefix};
}

pub mod tags {
    pub use crate::aws::tags::parse;
}

pub mod images {
    pub use crate::aws::images::{parse_copy_lines, parse_image_arg};
}

pub mod ssm {
    pub use crate::aws::ssm::Template;
}

pub mod calls {
    pub use crate::aws::calls::{Arns, Call, Op, ResourceKind};
}

pub mod policy {
    pub use crate::commands::policy::{build, scope};
}

pub use crate::aws::ami::Sharing;
pub use crate::aws::iam::parse_policy;
