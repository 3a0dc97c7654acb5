//! What imgpub calls in AWS, as data. [`Op`] is every SDK operation the library makes; its
//! [`Op::info`] is the one table of what each needs in IAM (the actions, dependent ones
//! included, the resources they act on, why). A command's **check** step lists the [`Call`]s
//! its plan will make; `imgpub aws policy`, the permission preflight and AccessDenied
//! messages read them through this table.

use serde::Serialize;

/// The AWS service an operation belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    S3,
    Ec2,
    Iam,
    Ssm,
    Sts,
    Ebs,
    /// The Recycle Bin's retention rules.
    Rbin,
    /// Service Quotas.
    #[serde(rename = "servicequotas")]
    Quotas,
}

/// Defines `Op` and `Op::ALL` from one list: a new operation is one line, and the table of
/// every operation cannot miss it.
macro_rules! ops {
    ($($op:ident,)*) => {
        /// Every AWS operation imgpub makes. Adding a call site means adding it here (the error
        /// helper takes an `Op`), and a unit test checks the table against the code.
        /// Serialized (in `--dry-run` plans) as its IAM-style name, `ec2:RegisterImage`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Op {
            $($op,)*
        }

        impl Op {
            /// Every operation, in the list's order.
            pub const ALL: &'static [Op] = &[$(Op::$op,)*];
        }
    };
}

ops! {
    S3GetBucketLocation,
    S3CreateBucket,
    S3HeadObject,
    S3DeleteObject,
    S3CreateMultipartUpload,
    S3UploadPart,
    S3CompleteMultipartUpload,
    S3AbortMultipartUpload,
    S3ListMultipartUploads,
    S3ListParts,
    S3GetBucketLifecycleConfiguration,
    S3PutBucketLifecycleConfiguration,
    ServiceQuotasGetServiceQuota,
    Ec2DescribeRegions,
    Ec2DescribeImages,
    Ec2DescribeImageAttribute,
    Ec2DescribeSnapshots,
    Ec2DescribeSnapshotAttribute,
    Ec2DescribeImportSnapshotTasks,
    Ec2ImportSnapshot,
    Ec2RegisterImage,
    Ec2DeregisterImage,
    Ec2EnableImageDeprecation,
    Ec2DisableImage,
    Ec2EnableImageDeregistrationProtection,
    Ec2DisableImageDeregistrationProtection,
    Ec2GetImageBlockPublicAccessState,
    Ec2GetSnapshotBlockPublicAccessState,
    Ec2GetEbsEncryptionByDefault,
    Ec2DeleteSnapshot,
    Ec2CreateTags,
    Ec2ModifyImageAttribute,
    Ec2ModifySnapshotAttribute,
    Ec2CopyImage,
    Ec2DescribeInstances,
    Ec2TerminateInstances,
    Ec2ListImagesInRecycleBin,
    Ec2ListSnapshotsInRecycleBin,
    Ec2RestoreSnapshotFromRecycleBin,
    Ec2RestoreImageFromRecycleBin,
    Ec2EnableImage,
    Ec2DisableImageDeprecation,
    Ec2CreateImageUsageReport,
    Ec2DescribeImageUsageReports,
    Ec2DescribeImageUsageReportEntries,
    RbinListRules,
    RbinListTagsForResource,
    RbinCreateRule,
    RbinUpdateRule,
    EbsStartSnapshot,
    EbsPutSnapshotBlock,
    EbsCompleteSnapshot,
    EbsListSnapshotBlocks,
    EbsGetSnapshotBlock,
    IamGetRole,
    IamCreateRole,
    IamUpdateAssumeRolePolicy,
    IamGetRolePolicy,
    IamListRolePolicies,
    IamPutRolePolicy,
    IamPutRolePermissionsBoundary,
    IamSimulatePrincipalPolicy,
    IamGetUser,
    IamCreateUser,
    IamListAttachedUserPolicies,
    IamAttachUserPolicy,
    IamListAccessKeys,
    IamCreateAccessKey,
    IamListAttachedRolePolicies,
    IamTagRole,
    IamListUserPolicies,
    IamListGroupsForUser,
    IamTagUser,
    IamPutUserPermissionsBoundary,
    IamUpdateAccessKey,
    IamDeleteAccessKey,
    IamGetPolicy,
    IamGetPolicyVersion,
    IamListPolicyVersions,
    IamCreatePolicy,
    IamCreatePolicyVersion,
    IamDeletePolicyVersion,
    IamGetOpenIdConnectProvider,
    IamCreateOpenIdConnectProvider,
    SsmGetParameter,
    SsmPutParameter,
    StsGetCallerIdentity,
}

/// The kind of resource an IAM action is authorized against; the policy scopes it by the
/// ARN of that kind ([`Arns`] builds them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceKind {
    Bucket,
    Object,
    Image,
    /// The AMI a CopyImage copies, in its own region.
    SourceImage,
    Snapshot,
    /// An EC2 instance (`gc` terminates kola's test instances).
    Instance,
    /// A Recycle Bin retention rule.
    RecycleBinRule,
    /// An AMI usage report (made new: `*`).
    ImageUsageReport,
    ImportSnapshotTask,
    Role,
    Parameter,
    User,
    ManagedPolicy,
    OidcProvider,
    /// A customer managed KMS key a snapshot is encrypted with (`--kms-key`). The AWS
    /// managed `aws/ebs` key needs nothing in IAM: its key policy lets the account use it
    /// through EC2.
    Key,
    /// The identity the preflight simulates: the publisher itself.
    Principal,
    /// Actions that take no resource-level permissions (`Describe*`, …): `*`.
    Any,
}

/// One IAM action an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub action: &'static str,
    pub resource: ResourceKind,
    /// A condition that must hold for this need: `ec2:CreateTags` on create is allowed
    /// only with `ec2:CreateAction` = the creating operation.
    pub create_action: Option<&'static str>,
    /// How imgpub's tag (`imgpub:managed`, aws/tags.rs) scopes the need.
    pub tagged: Tagged,
    pub why: &'static str,
}

/// How imgpub's tag scopes a need in the printed policy (and the preflight's simulation):
/// only resources imgpub made may be changed, and whatever it makes carries the tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tagged {
    /// Not scoped: a read, or a call EC2 offers no tag condition for (ImportSnapshot's
    /// snapshot, CopyImage's source AMI, tagging a snapshot an import made).
    No,
    /// Only on a resource that carries the tag (`aws:ResourceTag`).
    Resource,
    /// Only when the request puts the tag on what it makes (`aws:RequestTag`).
    Request,
}

/// The KMS actions EBS takes on the caller's behalf with a customer managed key. For the
/// EBS direct APIs: "kms:Encrypt, kms:Decrypt, kms:GenerateDataKey,
/// kms:GenerateDataKeyWithoutPlaintext, kms:ReEncrypt*, kms:CreateGrant, kms:DescribeKey"
/// (EBS User Guide, "Control access to EBS direct APIs using IAM"); for EBS encryption
/// elsewhere (CopyImage) all but Encrypt and GenerateDataKey (EBS User Guide, "Amazon EBS
/// encryption", "Permissions for users"). ReEncrypt* is ReEncryptFrom and ReEncryptTo.
const fn kms(action: &'static str) -> Need {
    need(
        action,
        ResourceKind::Key,
        "use the customer managed KMS key the snapshot is encrypted with (--kms-key)",
    )
}

const fn need(action: &'static str, resource: ResourceKind, why: &'static str) -> Need {
    Need {
        action,
        resource,
        create_action: None,
        tagged: Tagged::No,
        why,
    }
}

impl Need {
    /// Only on resources that carry imgpub's tag.
    const fn on_ours(self) -> Need {
        Need {
            tagged: Tagged::Resource,
            ..self
        }
    }

    /// Only when the request tags what it makes with imgpub's tag.
    const fn tagging_new(self) -> Need {
        Need {
            tagged: Tagged::Request,
            ..self
        }
    }
}

/// An operation's row in the table.
#[derive(Debug, Clone, Copy)]
pub struct OpInfo {
    pub service: Service,
    /// The API's own name (`RegisterImage`).
    pub name: &'static str,
    /// The SDK client's method (`register_image`): what the coverage test looks for.
    pub sdk_method: &'static str,
    pub needs: &'static [Need],
}

use ResourceKind as R;

impl Op {
    /// The table: what each operation needs in IAM, and why.
    pub fn info(self) -> OpInfo {
        use Service::*;
        let (service, name, sdk_method, needs): (_, _, _, &'static [Need]) = match self {
            Op::S3GetBucketLocation => (
                S3,
                "GetBucketLocation",
                "get_bucket_location",
                &const {
                    [need(
                        "s3:GetBucketLocation",
                        R::Bucket,
                        "check that the bucket exists in the command's region",
                    )]
                },
            ),
            Op::S3CreateBucket => (
                S3,
                "CreateBucket",
                "create_bucket",
                &const {
                    [need(
                        "s3:CreateBucket",
                        R::Bucket,
                        "create the image bucket",
                    )]
                },
            ),
            Op::S3HeadObject => (
                S3,
                "HeadObject",
                "head_object",
                &const {
                    [
                        need(
                            "s3:GetObject",
                            R::Object,
                            "see whether the image is already uploaded",
                        ),
                        // Without it S3 answers 403 instead of 404 for a key that is not there.
                        need(
                            "s3:ListBucket",
                            R::Bucket,
                            "tell a missing object (404) from a forbidden one (403)",
                        ),
                    ]
                },
            ),
            Op::S3DeleteObject => (
                S3,
                "DeleteObject",
                "delete_object",
                &const {
                    [need(
                        "s3:DeleteObject",
                        R::Object,
                        "delete the uploaded image once the snapshot exists",
                    )]
                },
            ),
            Op::S3CreateMultipartUpload => (
                S3,
                "CreateMultipartUpload",
                "create_multipart_upload",
                &const { [need("s3:PutObject", R::Object, "upload the image")] },
            ),
            Op::S3UploadPart => (
                S3,
                "UploadPart",
                "upload_part",
                &const { [need("s3:PutObject", R::Object, "upload the image")] },
            ),
            Op::S3CompleteMultipartUpload => (
                S3,
                "CompleteMultipartUpload",
                "complete_multipart_upload",
                &const { [need("s3:PutObject", R::Object, "upload the image")] },
            ),
            Op::S3AbortMultipartUpload => (
                S3,
                "AbortMultipartUpload",
                "abort_multipart_upload",
                &const {
                    [need(
                        "s3:AbortMultipartUpload",
                        R::Object,
                        "abort an upload that cannot be resumed, so no parts are left billed",
                    )]
                },
            ),
            Op::S3ListMultipartUploads => (
                S3,
                "ListMultipartUploads",
                "list_multipart_uploads",
                &const {
                    [need(
                        "s3:ListBucketMultipartUploads",
                        R::Bucket,
                        "find an interrupted upload to resume",
                    )]
                },
            ),
            Op::S3ListParts => (
                S3,
                "ListParts",
                "list_parts",
                &const {
                    [need(
                        "s3:ListMultipartUploadParts",
                        R::Object,
                        "resume: send only the parts that are missing",
                    )]
                },
            ),
            Op::S3GetBucketLifecycleConfiguration => (
                S3,
                "GetBucketLifecycleConfiguration",
                "get_bucket_lifecycle_configuration",
                &const {
                    [need(
                        "s3:GetLifecycleConfiguration",
                        R::Bucket,
                        "read the bucket's lifecycle rules",
                    )]
                },
            ),
            Op::S3PutBucketLifecycleConfiguration => (
                S3,
                "PutBucketLifecycleConfiguration",
                "put_bucket_lifecycle_configuration",
                &const {
                    [need(
                        "s3:PutLifecycleConfiguration",
                        R::Bucket,
                        "abort incomplete multipart uploads after some days",
                    )]
                },
            ),
            Op::Ec2DescribeRegions => (
                Ec2,
                "DescribeRegions",
                "describe_regions",
                &const {
                    [need(
                        "ec2:DescribeRegions",
                        R::Any,
                        "check the target regions are enabled",
                    )]
                },
            ),
            Op::Ec2DescribeImages => (
                Ec2,
                "DescribeImages",
                "describe_images",
                &const {
                    [need(
                        "ec2:DescribeImages",
                        R::Any,
                        "find an AMI of the same name, read an AMI's state and snapshot",
                    )]
                },
            ),
            Op::Ec2DescribeImageAttribute => (
                Ec2,
                "DescribeImageAttribute",
                "describe_image_attribute",
                &const {
                    [need(
                        "ec2:DescribeImageAttribute",
                        R::Image,
                        "read launch permissions to carry them to copies",
                    )]
                },
            ),
            Op::Ec2DescribeSnapshots => (
                Ec2,
                "DescribeSnapshots",
                "describe_snapshots",
                &const {
                    [need(
                        "ec2:DescribeSnapshots",
                        R::Any,
                        "find the snapshot an earlier run imported",
                    )]
                },
            ),
            Op::Ec2DescribeSnapshotAttribute => (
                Ec2,
                "DescribeSnapshotAttribute",
                "describe_snapshot_attribute",
                &const {
                    [need(
                        "ec2:DescribeSnapshotAttribute",
                        R::Snapshot,
                        "read create-volume permissions",
                    )]
                },
            ),
            Op::Ec2DescribeImportSnapshotTasks => (
                Ec2,
                "DescribeImportSnapshotTasks",
                "describe_import_snapshot_tasks",
                &const {
                    [need(
                        "ec2:DescribeImportSnapshotTasks",
                        R::Any,
                        "follow the import, find one an earlier run started",
                    )]
                },
            ),
            Op::Ec2ImportSnapshot => (
                Ec2,
                "ImportSnapshot",
                "import_snapshot",
                &const {
                    [
                        need(
                            "ec2:ImportSnapshot",
                            R::ImportSnapshotTask,
                            "import the uploaded image as a snapshot",
                        ),
                        need(
                            "ec2:ImportSnapshot",
                            R::Snapshot,
                            "import the uploaded image as a snapshot",
                        ),
                        // ImportSnapshot tags only its task ("The tags to apply to the import
                        // snapshot task": API reference, TagSpecifications): the snapshot it
                        // makes is tagged after, before it carries imgpub's tag.
                        need(
                            "ec2:CreateTags",
                            R::Snapshot,
                            "tag the snapshot an import made (ImportSnapshot tags only its task)",
                        ),
                    ]
                },
            ),
            Op::Ec2RegisterImage => (
                Ec2,
                "RegisterImage",
                "register_image",
                &const {
                    [
                        need("ec2:RegisterImage", R::Image, "register the AMI").tagging_new(),
                        need(
                            "ec2:RegisterImage",
                            R::Snapshot,
                            "register the AMI from the snapshot",
                        )
                        .on_ours(),
                        Need {
                            action: "ec2:CreateTags",
                            resource: R::Image,
                            create_action: Some("RegisterImage"),
                            tagged: Tagged::No,
                            why: "tag the AMI as it is registered",
                        },
                    ]
                },
            ),
            Op::Ec2DescribeInstances => (
                Ec2,
                "DescribeInstances",
                "describe_instances",
                &const {
                    [need(
                        "ec2:DescribeInstances",
                        R::Any,
                        "find the tagged instances older than --duration (gc)",
                    )]
                },
            ),
            Op::Ec2TerminateInstances => (
                Ec2,
                "TerminateInstances",
                "terminate_instances",
                &const {
                    [need(
                        "ec2:TerminateInstances",
                        R::Instance,
                        "terminate the tagged instances older than --duration (gc)",
                    )]
                },
            ),
            Op::EbsStartSnapshot => (
                Ebs,
                "StartSnapshot",
                "start_snapshot",
                &const {
                    [
                        need(
                            "ebs:StartSnapshot",
                            R::Snapshot,
                            "start the snapshot the image's blocks are written to",
                        )
                        .tagging_new(),
                        // The snapshot is tagged (Name, imgpub:content) as it is started.
                        Need {
                            action: "ec2:CreateTags",
                            resource: R::Snapshot,
                            create_action: Some("StartSnapshot"),
                            tagged: Tagged::No,
                            why: "tag the snapshot as it is started (reruns find it by tag)",
                        },
                        kms("kms:CreateGrant"),
                        kms("kms:Decrypt"),
                        kms("kms:DescribeKey"),
                        kms("kms:Encrypt"),
                        kms("kms:GenerateDataKey"),
                        kms("kms:GenerateDataKeyWithoutPlaintext"),
                        kms("kms:ReEncryptFrom"),
                        kms("kms:ReEncryptTo"),
                    ]
                },
            ),
            Op::EbsPutSnapshotBlock => (
                Ebs,
                "PutSnapshotBlock",
                "put_snapshot_block",
                &const {
                    [
                        need(
                            "ebs:PutSnapshotBlock",
                            R::Snapshot,
                            "write the image's blocks",
                        )
                        .on_ours(),
                        kms("kms:CreateGrant"),
                        kms("kms:Decrypt"),
                        kms("kms:DescribeKey"),
                        kms("kms:Encrypt"),
                        kms("kms:GenerateDataKey"),
                        kms("kms:GenerateDataKeyWithoutPlaintext"),
                        kms("kms:ReEncryptFrom"),
                        kms("kms:ReEncryptTo"),
                    ]
                },
            ),
            Op::EbsCompleteSnapshot => (
                Ebs,
                "CompleteSnapshot",
                "complete_snapshot",
                &const {
                    [need(
                        "ebs:CompleteSnapshot",
                        R::Snapshot,
                        "seal the snapshot with its block count and checksum",
                    )
                    .on_ours()]
                },
            ),
            Op::EbsListSnapshotBlocks => (
                Ebs,
                "ListSnapshotBlocks",
                "list_snapshot_blocks",
                &const {
                    [need(
                        "ebs:ListSnapshotBlocks",
                        R::Snapshot,
                        "list the blocks of the snapshot read back (verify-snapshot)",
                    )]
                },
            ),
            Op::EbsGetSnapshotBlock => (
                Ebs,
                "GetSnapshotBlock",
                "get_snapshot_block",
                &const {
                    [
                        need(
                            "ebs:GetSnapshotBlock",
                            R::Snapshot,
                            "read the snapshot's blocks back (verify-snapshot)",
                        ),
                        kms("kms:Decrypt"),
                    ]
                },
            ),
            Op::Ec2DeregisterImage => (
                Ec2,
                "DeregisterImage",
                "deregister_image",
                &const {
                    [need(
                        "ec2:DeregisterImage",
                        R::Image,
                        "replace (--force), delete, or redo a failed copy",
                    )
                    .on_ours()]
                },
            ),
            Op::Ec2EnableImageDeprecation => (
                Ec2,
                "EnableImageDeprecation",
                "enable_image_deprecation",
                &const {
                    [need(
                        "ec2:EnableImageDeprecation",
                        R::Image,
                        "deprecate the AMI (--deprecate-in/--deprecate-at; copies keep it)",
                    )
                    .on_ours()]
                },
            ),
            Op::Ec2DisableImage => (
                Ec2,
                "DisableImage",
                "disable_image",
                &const {
                    [need(
                        "ec2:DisableImage",
                        R::Image,
                        "disable an AMI a release prune retires (hidden, not launchable, restorable)",
                    )
                    .on_ours()]
                },
            ),
            Op::Ec2ListImagesInRecycleBin => (
                Ec2,
                "ListImagesInRecycleBin",
                "list_images_in_recycle_bin",
                &const {
                    [need(
                        "ec2:ListImagesInRecycleBin",
                        R::Any,
                        "find a pruned release's AMIs in the Recycle Bin (release restore)",
                    )]
                },
            ),
            Op::Ec2ListSnapshotsInRecycleBin => (
                Ec2,
                "ListSnapshotsInRecycleBin",
                "list_snapshots_in_recycle_bin",
                &const {
                    [need(
                        "ec2:ListSnapshotsInRecycleBin",
                        R::Any,
                        "find a pruned release's snapshots in the Recycle Bin (release restore)",
                    )]
                },
            ),
            Op::Ec2RestoreSnapshotFromRecycleBin => (
                Ec2,
                "RestoreSnapshotFromRecycleBin",
                "restore_snapshot_from_recycle_bin",
                &const {
                    [need(
                        "ec2:RestoreSnapshotFromRecycleBin",
                        R::Snapshot,
                        "bring a pruned release's snapshot back (before its AMI)",
                    )
                    .on_ours()]
                },
            ),
            Op::Ec2RestoreImageFromRecycleBin => (
                Ec2,
                "RestoreImageFromRecycleBin",
                "restore_image_from_recycle_bin",
                &const {
                    [need(
                        "ec2:RestoreImageFromRecycleBin",
                        R::Image,
                        "bring a pruned release's AMI back",
                    )
                    .on_ours()]
                },
            ),
            Op::Ec2EnableImage => (
                Ec2,
                "EnableImage",
                "enable_image",
                &const {
                    [need(
                        "ec2:EnableImage",
                        R::Image,
                        "make a restored AMI launchable again (prune had disabled it)",
                    )
                    .on_ours()]
                },
            ),
            Op::Ec2DisableImageDeprecation => (
                Ec2,
                "DisableImageDeprecation",
                "disable_image_deprecation",
                &const {
                    [need(
                        "ec2:DisableImageDeprecation",
                        R::Image,
                        "cancel the deprecation prune gave a restored AMI",
                    )
                    .on_ours()]
                },
            ),
            Op::Ec2CreateImageUsageReport => (
                Ec2,
                "CreateImageUsageReport",
                "create_image_usage_report",
                &const {
                    [
                        need(
                            "ec2:CreateImageUsageReport",
                            R::Image,
                            "ask which accounts use an AMI before prune retires it (keep_in_use)",
                        )
                        .on_ours(),
                        need(
                            "ec2:CreateImageUsageReport",
                            R::ImageUsageReport,
                            "the usage report it makes",
                        ),
                    ]
                },
            ),
            Op::Ec2DescribeImageUsageReports => (
                Ec2,
                "DescribeImageUsageReports",
                "describe_image_usage_reports",
                &const {
                    [need(
                        "ec2:DescribeImageUsageReports",
                        R::Any,
                        "find each AMI's newest usage report (keep_in_use)",
                    )]
                },
            ),
            Op::Ec2DescribeImageUsageReportEntries => (
                Ec2,
                "DescribeImageUsageReportEntries",
                "describe_image_usage_report_entries",
                &const {
                    [need(
                        "ec2:DescribeImageUsageReportEntries",
                        R::Any,
                        "read which accounts a usage report found using the AMI (keep_in_use)",
                    )]
                },
            ),
            Op::RbinListRules => (
                Rbin,
                "ListRules",
                "list_rules",
                &const {
                    [need(
                        "rbin:ListRules",
                        R::Any,
                        "find the Recycle Bin rules of the region (initialize --recycle-bin)",
                    )]
                },
            ),
            Op::RbinListTagsForResource => (
                Rbin,
                "ListTagsForResource",
                "list_tags_for_resource",
                &const {
                    [need(
                        "rbin:ListTagsForResource",
                        R::RecycleBinRule,
                        "tell imgpub's Recycle Bin rule (tagged imgpub:managed) from another's",
                    )]
                },
            ),
            Op::RbinCreateRule => (
                Rbin,
                "CreateRule",
                "create_rule",
                &const {
                    [
                        need(
                            "rbin:CreateRule",
                            R::RecycleBinRule,
                            "keep what imgpub deletes restorable (initialize --recycle-bin)",
                        )
                        .tagging_new(),
                        // Tags on create (Service Authorization Reference, Recycle Bin:
                        // CreateRule's dependent actions).
                        need(
                            "rbin:TagResource",
                            R::RecycleBinRule,
                            "tag the new rule as imgpub's",
                        )
                        .tagging_new(),
                    ]
                },
            ),
            Op::RbinUpdateRule => (
                Rbin,
                "UpdateRule",
                "update_rule",
                &const {
                    [need(
                        "rbin:UpdateRule",
                        R::RecycleBinRule,
                        "change the retention of imgpub's Recycle Bin rule",
                    )
                    .on_ours()]
                },
            ),
            Op::Ec2EnableImageDeregistrationProtection => (
                Ec2,
                "EnableImageDeregistrationProtection",
                "enable_image_deregistration_protection",
                &const {
                    [need(
                        "ec2:EnableImageDeregistrationProtection",
                        R::Image,
                        "protect a supported release's AMI from deregistration (protect = true)",
                    )
                    .on_ours()]
                },
            ),
            Op::Ec2DisableImageDeregistrationProtection => (
                Ec2,
                "DisableImageDeregistrationProtection",
                "disable_image_deregistration_protection",
                &const {
                    [need(
                        "ec2:DisableImageDeregistrationProtection",
                        R::Image,
                        "lift the protection of a release that left support (prune, protect = true)",
                    )
                    .on_ours()]
                },
            ),
            Op::Ec2GetImageBlockPublicAccessState => (
                Ec2,
                "GetImageBlockPublicAccessState",
                "get_image_block_public_access_state",
                &const {
                    [need(
                        "ec2:GetImageBlockPublicAccessState",
                        R::Any,
                        "before --public: is public sharing of AMIs blocked in the region?",
                    )]
                },
            ),
            Op::Ec2GetSnapshotBlockPublicAccessState => (
                Ec2,
                "GetSnapshotBlockPublicAccessState",
                "get_snapshot_block_public_access_state",
                &const {
                    [need(
                        "ec2:GetSnapshotBlockPublicAccessState",
                        R::Any,
                        "before --public: is public sharing of snapshots blocked in the region?",
                    )]
                },
            ),
            Op::ServiceQuotasGetServiceQuota => (
                Quotas,
                "GetServiceQuota",
                "get_service_quota",
                &const {
                    [need(
                        "servicequotas:GetServiceQuota",
                        R::Any,
                        "before --public: how many public AMIs the region allows (its \"Public AMIs\" quota)",
                    )]
                },
            ),
            Op::Ec2GetEbsEncryptionByDefault => (
                Ec2,
                "GetEbsEncryptionByDefault",
                "get_ebs_encryption_by_default",
                &const {
                    [need(
                        "ec2:GetEbsEncryptionByDefault",
                        R::Any,
                        "before --public: does the region encrypt every new snapshot?",
                    )]
                },
            ),
            Op::Ec2DeleteSnapshot => (
                Ec2,
                "DeleteSnapshot",
                "delete_snapshot",
                &const {
                    [need(
                        "ec2:DeleteSnapshot",
                        R::Snapshot,
                        "delete the snapshot of a deleted AMI",
                    )
                    .on_ours()]
                },
            ),
            Op::Ec2CreateTags => (
                Ec2,
                "CreateTags",
                "create_tags",
                &const {
                    [
                        need(
                            "ec2:CreateTags",
                            R::Image,
                            "tag the AMI (Name, --tags, the source's tags on copies)",
                        )
                        .on_ours(),
                        // Only imgpub's: every snapshot it makes carries its tag from the
                        // start, but for an import's (see ImportSnapshot). Unscoped, a
                        // leaked credential could tag any snapshot as imgpub's, and then
                        // share or delete it.
                        need(
                            "ec2:CreateTags",
                            R::Snapshot,
                            "tag the snapshot (Name, --tags, the source's tags on copies)",
                        )
                        .on_ours(),
                    ]
                },
            ),
            Op::Ec2ModifyImageAttribute => (
                Ec2,
                "ModifyImageAttribute",
                "modify_image_attribute",
                &const {
                    [need(
                        "ec2:ModifyImageAttribute",
                        R::Image,
                        "launch permissions (--public, --grant-user, grant)",
                    )
                    .on_ours()]
                },
            ),
            Op::Ec2ModifySnapshotAttribute => (
                Ec2,
                "ModifySnapshotAttribute",
                "modify_snapshot_attribute",
                &const {
                    [need(
                        "ec2:ModifySnapshotAttribute",
                        R::Snapshot,
                        "create-volume permissions (--public, --grant-user-snapshot)",
                    )
                    .on_ours()]
                },
            ),
            Op::Ec2CopyImage => (
                Ec2,
                "CopyImage",
                "copy_image",
                &const {
                    [
                        need("ec2:CopyImage", R::Image, "copy the AMI to another region")
                            .tagging_new(),
                        // "Starting October 28, 2024, you can specify resource-level
                        // permissions for the CopyImage action on the source AMI." (EC2 User
                        // Guide, "Grant permissions to copy Amazon EC2 AMIs").
                        need(
                            "ec2:CopyImage",
                            R::SourceImage,
                            "read the source AMI (EC2 authorizes CopyImage on it too)",
                        ),
                        need(
                            "ec2:CopyImage",
                            R::Snapshot,
                            "copy the AMI's snapshot with it",
                        )
                        .tagging_new(),
                        // The copy and its snapshot are tagged as imgpub's as they are made.
                        Need {
                            action: "ec2:CreateTags",
                            resource: R::Image,
                            create_action: Some("CopyImage"),
                            tagged: Tagged::No,
                            why: "tag the copy as imgpub's as it is made",
                        },
                        Need {
                            action: "ec2:CreateTags",
                            resource: R::Snapshot,
                            create_action: Some("CopyImage"),
                            tagged: Tagged::No,
                            why: "tag the copy's snapshot as imgpub's as it is made",
                        },
                        kms("kms:CreateGrant"),
                        kms("kms:Decrypt"),
                        kms("kms:DescribeKey"),
                        kms("kms:GenerateDataKeyWithoutPlaintext"),
                        kms("kms:ReEncryptFrom"),
                        kms("kms:ReEncryptTo"),
                    ]
                },
            ),
            Op::IamGetRole => (
                Iam,
                "GetRole",
                "get_role",
                &const {
                    [need(
                        "iam:GetRole",
                        R::Role,
                        "check that the vmimport role exists",
                    )]
                },
            ),
            Op::IamCreateRole => (
                Iam,
                "CreateRole",
                "create_role",
                &const { [need("iam:CreateRole", R::Role, "create the vmimport role")] },
            ),
            Op::IamUpdateAssumeRolePolicy => (
                Iam,
                "UpdateAssumeRolePolicy",
                "update_assume_role_policy",
                &const {
                    [need(
                        "iam:UpdateAssumeRolePolicy",
                        R::Role,
                        "repair the vmimport role's trust policy",
                    )]
                },
            ),
            Op::IamGetRolePolicy => (
                Iam,
                "GetRolePolicy",
                "get_role_policy",
                &const {
                    [need(
                        "iam:GetRolePolicy",
                        R::Role,
                        "read the vmimport role's policy",
                    )]
                },
            ),
            Op::IamListRolePolicies => (
                Iam,
                "ListRolePolicies",
                "list_role_policies",
                &const {
                    [need(
                        "iam:ListRolePolicies",
                        R::Role,
                        "find the vmimport role's other inline policies (ore's, one per bucket)",
                    )]
                },
            ),
            Op::IamPutRolePolicy => (
                Iam,
                "PutRolePolicy",
                "put_role_policy",
                &const {
                    [need(
                        "iam:PutRolePolicy",
                        R::Role,
                        "write the vmimport role's policy",
                    )]
                },
            ),
            Op::IamPutRolePermissionsBoundary => (
                Iam,
                "PutRolePermissionsBoundary",
                "put_role_permissions_boundary",
                &const {
                    [need(
                        "iam:PutRolePermissionsBoundary",
                        R::Role,
                        "set the vmimport role's permissions boundary",
                    )]
                },
            ),
            Op::IamSimulatePrincipalPolicy => (
                Iam,
                "SimulatePrincipalPolicy",
                "simulate_principal_policy",
                &const {
                    [
                need("iam:SimulatePrincipalPolicy", R::Principal, "check before starting that every call this run makes is allowed (--preflight)"),
            ]
                },
            ),
            Op::IamGetUser => (
                Iam,
                "GetUser",
                "get_user",
                &const {
                    [need(
                        "iam:GetUser",
                        R::User,
                        "see whether the publisher user exists",
                    )]
                },
            ),
            Op::IamCreateUser => (
                Iam,
                "CreateUser",
                "create_user",
                &const { [need("iam:CreateUser", R::User, "create the publisher user")] },
            ),
            Op::IamListAttachedUserPolicies => (
                Iam,
                "ListAttachedUserPolicies",
                "list_attached_user_policies",
                &const {
                    [need(
                        "iam:ListAttachedUserPolicies",
                        R::User,
                        "see whether the publisher policy is attached",
                    )]
                },
            ),
            Op::IamAttachUserPolicy => (
                Iam,
                "AttachUserPolicy",
                "attach_user_policy",
                &const {
                    [need(
                        "iam:AttachUserPolicy",
                        R::User,
                        "attach the publisher policy to the user",
                    )]
                },
            ),
            Op::IamListAccessKeys => (
                Iam,
                "ListAccessKeys",
                "list_access_keys",
                &const {
                    [need(
                        "iam:ListAccessKeys",
                        R::User,
                        "create a key only when the user has none",
                    )]
                },
            ),
            Op::IamCreateAccessKey => (
                Iam,
                "CreateAccessKey",
                "create_access_key",
                &const {
                    [need(
                        "iam:CreateAccessKey",
                        R::User,
                        "the publisher user's access key",
                    )]
                },
            ),
            Op::IamListAttachedRolePolicies => (
                Iam,
                "ListAttachedRolePolicies",
                "list_attached_role_policies",
                &const {
                    [need("iam:ListAttachedRolePolicies", R::Role, "report the managed policies attached to the publisher role besides imgpub's")]
                },
            ),
            Op::IamTagRole => (
                Iam,
                "TagRole",
                "tag_role",
                &const {
                    [need(
                        "iam:TagRole",
                        R::Role,
                        "mark the publisher role as imgpub's (at creation, or when adopted)",
                    )]
                },
            ),
            Op::IamListUserPolicies => (
                Iam,
                "ListUserPolicies",
                "list_user_policies",
                &const {
                    [need(
                        "iam:ListUserPolicies",
                        R::User,
                        "report the publisher user's inline policies",
                    )]
                },
            ),
            Op::IamListGroupsForUser => (
                Iam,
                "ListGroupsForUser",
                "list_groups_for_user",
                &const {
                    [need(
                        "iam:ListGroupsForUser",
                        R::User,
                        "report the groups (and so the policies) the publisher user is in",
                    )]
                },
            ),
            Op::IamTagUser => (
                Iam,
                "TagUser",
                "tag_user",
                &const {
                    [need(
                        "iam:TagUser",
                        R::User,
                        "mark the publisher user as imgpub's (at creation, or when adopted)",
                    )]
                },
            ),
            Op::IamPutUserPermissionsBoundary => (
                Iam,
                "PutUserPermissionsBoundary",
                "put_user_permissions_boundary",
                &const {
                    [need(
                        "iam:PutUserPermissionsBoundary",
                        R::User,
                        "put --permissions-boundary on a publisher user that exists",
                    )]
                },
            ),
            Op::IamUpdateAccessKey => (
                Iam,
                "UpdateAccessKey",
                "update_access_key",
                &const {
                    [need(
                        "iam:UpdateAccessKey",
                        R::User,
                        "deactivate the old key after --rotate-key",
                    )]
                },
            ),
            Op::IamDeleteAccessKey => (
                Iam,
                "DeleteAccessKey",
                "delete_access_key",
                &const {
                    [need("iam:DeleteAccessKey", R::User, "delete a new key that could not be written, or the old one (--delete-old-key)")]
                },
            ),
            Op::IamGetPolicy => (
                Iam,
                "GetPolicy",
                "get_policy",
                &const {
                    [need(
                        "iam:GetPolicy",
                        R::ManagedPolicy,
                        "read the publisher policy",
                    )]
                },
            ),
            Op::IamGetPolicyVersion => (
                Iam,
                "GetPolicyVersion",
                "get_policy_version",
                &const {
                    [need(
                        "iam:GetPolicyVersion",
                        R::ManagedPolicy,
                        "compare the publisher policy with what it should be",
                    )]
                },
            ),
            Op::IamListPolicyVersions => (
                Iam,
                "ListPolicyVersions",
                "list_policy_versions",
                &const {
                    [need(
                        "iam:ListPolicyVersions",
                        R::ManagedPolicy,
                        "make room for a new version (IAM keeps five)",
                    )]
                },
            ),
            Op::IamCreatePolicy => (
                Iam,
                "CreatePolicy",
                "create_policy",
                &const {
                    [need(
                        "iam:CreatePolicy",
                        R::ManagedPolicy,
                        "create the publisher policy",
                    )]
                },
            ),
            Op::IamCreatePolicyVersion => (
                Iam,
                "CreatePolicyVersion",
                "create_policy_version",
                &const {
                    [need(
                        "iam:CreatePolicyVersion",
                        R::ManagedPolicy,
                        "repair the publisher policy",
                    )]
                },
            ),
            Op::IamDeletePolicyVersion => (
                Iam,
                "DeletePolicyVersion",
                "delete_policy_version",
                &const {
                    [need(
                        "iam:DeletePolicyVersion",
                        R::ManagedPolicy,
                        "make room for a new version (IAM keeps five)",
                    )]
                },
            ),
            Op::IamGetOpenIdConnectProvider => (
                Iam,
                "GetOpenIDConnectProvider",
                "get_open_id_connect_provider",
                &const {
                    [need(
                        "iam:GetOpenIDConnectProvider",
                        R::OidcProvider,
                        "see whether GitHub's OIDC provider exists",
                    )]
                },
            ),
            Op::IamCreateOpenIdConnectProvider => (
                Iam,
                "CreateOpenIDConnectProvider",
                "create_open_id_connect_provider",
                &const {
                    [need(
                        "iam:CreateOpenIDConnectProvider",
                        R::OidcProvider,
                        "create GitHub's OIDC provider",
                    )]
                },
            ),
            Op::SsmGetParameter => (
                Ssm,
                "GetParameter",
                "get_parameter",
                &const {
                    [need(
                        "ssm:GetParameter",
                        R::Parameter,
                        "read the parameter's current AMI",
                    )]
                },
            ),
            Op::SsmPutParameter => {
                (
                    Ssm,
                    "PutParameter",
                    "put_parameter",
                    &const {
                        [
                need("ssm:PutParameter", R::Parameter, "point the parameter at the AMI"),
                // SSM checks an aws:ec2:image value with the caller's credentials.
                need("ec2:DescribeImages", R::Any, "SSM checks that an aws:ec2:image value is an AMI the caller can see"),
            ]
                    },
                )
            }
            Op::StsGetCallerIdentity => (Sts, "GetCallerIdentity", "get_caller_identity", &[]),
        };
        OpInfo {
            service,
            name,
            sdk_method,
            needs,
        }
    }

    /// `ec2:RegisterImage`-style name for messages.
    pub fn name(self) -> String {
        let info = self.info();
        let service = match info.service {
            Service::S3 => "s3",
            Service::Ec2 => "ec2",
            Service::Iam => "iam",
            Service::Ssm => "ssm",
            Service::Sts => "sts",
            Service::Ebs => "ebs",
            Service::Rbin => "rbin",
            Service::Quotas => "servicequotas",
        };
        format!("{service}:{}", info.name)
    }
}

impl Serialize for Op {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// A resource a call acts on, as far as the plan knows it (`None`: not created yet).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "id")]
pub enum Resource {
    Bucket(String),
    Object {
        bucket: String,
        key: String,
    },
    Image(Option<String>),
    /// A CopyImage's source AMI, in its region.
    SourceImage {
        region: String,
        id: String,
    },
    Snapshot(Option<String>),
    Instance(String),
    Role(String),
    Parameter(String),
    /// A KMS key, by ARN.
    Key(String),
    /// A Recycle Bin retention rule by its identifier (`None`: a new one).
    Rule(Option<String>),
}

impl Resource {
    fn in_words(&self) -> String {
        match self {
            Resource::Bucket(b) => format!("bucket {b}"),
            Resource::Object { bucket, key } => format!("s3://{bucket}/{key}"),
            Resource::Image(Some(id)) | Resource::Snapshot(Some(id)) => id.clone(),
            Resource::Image(None) => "a new AMI".into(),
            Resource::Snapshot(None) => "a new snapshot".into(),
            Resource::SourceImage { region, id } => format!("from {id} ({region})"),
            Resource::Instance(id) => format!("instance {id}"),
            Resource::Role(name) => format!("role {name}"),
            Resource::Parameter(name) => format!("parameter {name}"),
            Resource::Key(arn) => format!("with key {arn}"),
            Resource::Rule(Some(id)) => format!("Recycle Bin rule {id}"),
            Resource::Rule(None) => "a new Recycle Bin rule".into(),
        }
    }
}

/// One call a plan will make: the check step's output, the input of the preflight,
/// `--dry-run` and `policy`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Call {
    pub op: Op,
    pub region: String,
    pub resources: Vec<Resource>,
    /// The call tags what it creates (TagSpecifications): it also needs the
    /// `ec2:CreateTags` allowed for its `ec2:CreateAction`.
    pub tags_on_create: bool,
    /// Condition keys the request carries (`ec2:Add/group`, `ec2:Add/userId`, the
    /// `aws:ResourceTag/KEY` of an instance `gc` terminates), each with its values.
    pub context: Vec<(String, Vec<String>)>,
    /// Made only when a step fails (aborting an upload that cannot be resumed): checked by
    /// the preflight all the same, and marked so in a `--dry-run` plan.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub on_failure: bool,
    /// The accounts the call shares an AMI or snapshot with: what a policy's `--share-with`
    /// must name for it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shares_with: Vec<String>,
}

impl Call {
    pub fn new(op: Op, region: &str, resources: Vec<Resource>) -> Call {
        Call {
            op,
            region: region.to_string(),
            resources,
            tags_on_create: false,
            context: vec![],
            on_failure: false,
            shares_with: vec![],
        }
    }

    /// The same call, made only when a step fails.
    pub fn on_failure(self) -> Call {
        Call {
            on_failure: true,
            ..self
        }
    }

    /// The call in words, for a dry run: `would ec2:DeregisterImage ami-… in us-east-1`.
    pub fn in_words(&self) -> String {
        let what: Vec<String> = self.resources.iter().map(Resource::in_words).collect();
        let mut line = format!("would {}", self.op);
        if !what.is_empty() {
            line.push_str(&format!(" {}", what.join(", ")));
        }
        line.push_str(&format!(" in {}", self.region));
        if !self.shares_with.is_empty() {
            line.push_str(&format!(", sharing with {}", self.shares_with.join(", ")));
        }
        if self.on_failure {
            line.push_str(" (only if a step fails)");
        }
        line
    }

    /// Whether the call changes something: what a `--dry-run` plan lists. Reads
    /// (`Describe*`, `Get*`, `List*`, `Head*`) and the permission simulation do not.
    pub fn changes(&self) -> bool {
        let name = self.op.info().name;
        !(["Describe", "Get", "List", "Head"]
            .iter()
            .any(|read| name.starts_with(read))
            || self.op == Op::IamSimulatePrincipalPolicy)
    }

    /// The IAM checks this call needs: (action, resource ARN, `ec2:CreateAction` if any),
    /// with the real ids the plan knows and `*` for what does not exist yet. Needs on a
    /// kind of resource the call does not touch (a CreateTags on images, when only a
    /// snapshot is tagged) are left out.
    pub fn checks(&self, arns: &Arns) -> Vec<(&'static str, String, &'static Need)> {
        let mut out = vec![];
        for need in self.op.info().needs {
            if need.create_action.is_some() && !self.tags_on_create {
                continue;
            }
            let arn = match need.resource {
                // The caller itself, whose ARN the check step does not know.
                ResourceKind::Any | ResourceKind::Principal => Some("*".to_string()),
                ResourceKind::ImportSnapshotTask => Some(arns.import_task(&self.region, "*")),
                ResourceKind::ImageUsageReport => Some(arns.usage_report(&self.region, "*")),
                kind => self
                    .resources
                    .iter()
                    .find_map(|r| arns.of(kind, &self.region, r)),
            };
            if let Some(arn) = arn {
                out.push((need.action, arn, need));
            }
        }
        out
    }
}

/// ARNs in one partition and account (`*` where the account is not known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arns {
    pub partition: String,
    pub account: Option<String>,
}

impl Arns {
    fn account(&self) -> &str {
        self.account.as_deref().unwrap_or("*")
    }

    pub fn bucket(&self, bucket: &str) -> String {
        format!("arn:{}:s3:::{bucket}", self.partition)
    }

    /// An object, or with a key ending in `*` the objects under a prefix.
    pub fn object(&self, bucket: &str, key: &str) -> String {
        format!("arn:{}:s3:::{bucket}/{key}", self.partition)
    }

    pub fn image(&self, region: &str, id: &str) -> String {
        format!("arn:{}:ec2:{region}::image/{id}", self.partition)
    }

    pub fn snapshot(&self, region: &str, id: &str) -> String {
        format!("arn:{}:ec2:{region}::snapshot/{id}", self.partition)
    }

    pub fn instance(&self, region: &str, id: &str) -> String {
        format!(
            "arn:{}:ec2:{region}:{}:instance/{id}",
            self.partition,
            self.account()
        )
    }

    pub fn import_task(&self, region: &str, id: &str) -> String {
        format!(
            "arn:{}:ec2:{region}:{}:import-snapshot-task/{id}",
            self.partition,
            self.account()
        )
    }

    pub fn user(&self, name: &str) -> String {
        format!("arn:{}:iam::{}:user/{name}", self.partition, self.account())
    }

    pub fn managed_policy(&self, name: &str) -> String {
        format!(
            "arn:{}:iam::{}:policy/{name}",
            self.partition,
            self.account()
        )
    }

    pub fn oidc_provider(&self, host: &str) -> String {
        format!(
            "arn:{}:iam::{}:oidc-provider/{host}",
            self.partition,
            self.account()
        )
    }

    pub fn role(&self, name: &str) -> String {
        format!("arn:{}:iam::{}:role/{name}", self.partition, self.account())
    }

    /// An AMI usage report (Service Authorization Reference, EC2: `image-usage-report`).
    pub fn usage_report(&self, region: &str, id: &str) -> String {
        format!(
            "arn:{}:ec2:{region}:{}:image-usage-report/{id}",
            self.partition,
            self.account()
        )
    }

    /// A Recycle Bin rule (Service Authorization Reference, Recycle Bin: `rule`).
    pub fn rule(&self, region: &str, id: &str) -> String {
        format!(
            "arn:{}:rbin:{region}:{}:rule/{id}",
            self.partition,
            self.account()
        )
    }

    /// A parameter (`/os/latest`), or with a name ending in `*` those under a path.
    pub fn parameter(&self, region: &str, name: &str) -> String {
        format!(
            "arn:{}:ssm:{region}:{}:parameter/{}",
            self.partition,
            self.account(),
            name.trim_start_matches('/')
        )
    }

    /// The ARN of `resource` when it is of `kind`.
    fn of(&self, kind: ResourceKind, region: &str, resource: &Resource) -> Option<String> {
        let id = |id: &Option<String>| id.clone().unwrap_or_else(|| "*".to_string());
        Some(match (kind, resource) {
            (ResourceKind::Bucket, Resource::Bucket(b) | Resource::Object { bucket: b, .. }) => {
                self.bucket(b)
            }
            (ResourceKind::Object, Resource::Object { bucket, key }) => self.object(bucket, key),
            (ResourceKind::Image, Resource::Image(i)) => self.image(region, &id(i)),
            (ResourceKind::SourceImage, Resource::SourceImage { region, id }) => {
                self.image(region, id)
            }
            (ResourceKind::Snapshot, Resource::Snapshot(s)) => self.snapshot(region, &id(s)),
            (ResourceKind::Instance, Resource::Instance(i)) => self.instance(region, i),
            (ResourceKind::Role, Resource::Role(name)) => self.role(name),
            (ResourceKind::Parameter, Resource::Parameter(name)) => self.parameter(region, name),
            (ResourceKind::Key, Resource::Key(arn)) => arn.clone(),
            (ResourceKind::RecycleBinRule, Resource::Rule(r)) => self.rule(region, &id(r)),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The library's sources, without this file (whose table names every method).
    fn sources() -> Vec<(&'static str, &'static str)> {
        vec![
            ("ami.rs", include_str!("ami.rs")),
            ("config/mod.rs", include_str!("config/mod.rs")),
            ("copy.rs", include_str!("copy.rs")),
            ("ebs_direct.rs", include_str!("ebs_direct.rs")),
            ("ebs_read.rs", include_str!("ebs_read.rs")),
            (
                "commands/verify_snapshot.rs",
                include_str!("../commands/verify_snapshot.rs"),
            ),
            ("instances.rs", include_str!("instances.rs")),
            ("iam.rs", include_str!("iam.rs")),
            ("vmimport_role.rs", include_str!("vmimport_role.rs")),
            ("import.rs", include_str!("import.rs")),
            ("multipart.rs", include_str!("multipart.rs")),
            ("permissions.rs", include_str!("permissions.rs")),
            ("regions.rs", include_str!("regions.rs")),
            ("s3.rs", include_str!("s3.rs")),
            ("ssm.rs", include_str!("ssm.rs")),
            ("preflight.rs", include_str!("preflight.rs")),
            ("publisher.rs", include_str!("publisher.rs")),
            ("recycle_bin.rs", include_str!("recycle_bin.rs")),
            ("usage_reports.rs", include_str!("usage_reports.rs")),
            ("tags.rs", include_str!("tags.rs")),
            (
                "commands/upload/remote.rs",
                include_str!("../commands/upload/remote.rs"),
            ),
            (
                "commands/upload/stages.rs",
                include_str!("../commands/upload/stages.rs"),
            ),
            (
                "commands/initialize.rs",
                include_str!("../commands/initialize.rs"),
            ),
            (
                "commands/copy_regions.rs",
                include_str!("../commands/copy_regions.rs"),
            ),
            ("commands/grant.rs", include_str!("../commands/grant.rs")),
            (
                "commands/ensure_public.rs",
                include_str!("../commands/ensure_public.rs"),
            ),
            (
                "commands/publish_ssm.rs",
                include_str!("../commands/publish_ssm.rs"),
            ),
            (
                "commands/delete_image.rs",
                include_str!("../commands/delete_image.rs"),
            ),
            ("commands/gc.rs", include_str!("../commands/gc.rs")),
        ]
    }

    /// The SDK operations called in `text`: a method called on a client (`ec2.`, `s3.`,
    /// `iam.`, `ssm.`, `sts().`, `quotas.`), also where rustfmt split the chain over lines.
    fn called_methods(text: &str) -> BTreeSet<String> {
        // Drop the white space before a `.`, so `ec2\n    .describe_images()` reads as one.
        let mut flat = String::with_capacity(text.len());
        let mut pending = String::new();
        for c in text.chars() {
            if c.is_whitespace() {
                pending.push(c);
                continue;
            }
            if c != '.' {
                flat.push_str(&pending);
            }
            pending.clear();
            flat.push(c);
        }
        let mut found = BTreeSet::new();
        for client in [
            "ec2",
            "ebs",
            "s3",
            "iam",
            "ssm",
            "sts()",
            "quotas",
            "rbin",
            "s3_client",
            "iam_client",
        ] {
            let pat = format!("{client}.");
            let mut from = 0;
            while let Some(at) = flat[from..].find(&pat).map(|i| i + from) {
                from = at + pat.len();
                let before = flat[..at].chars().last();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue; // part of a longer name
                }
                let method: String = flat[from..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                    .collect();
                let is_call = flat[from + method.len()..].starts_with("()");
                if is_call && !method.is_empty() && !["clone", "config"].contains(&method.as_str())
                {
                    found.insert(method);
                }
            }
        }
        found
    }

    #[test]
    fn every_call_site_is_in_the_table_and_every_row_is_called() {
        let table: BTreeSet<String> = Op::ALL
            .iter()
            .map(|op| op.info().sdk_method.to_string())
            .collect();
        let mut called = BTreeSet::new();
        for (file, text) in sources() {
            for method in called_methods(text) {
                assert!(
                    table.contains(&method),
                    "{file} calls `{method}`, which the table in calls.rs does not cover"
                );
                called.insert(method);
            }
        }
        for method in &table {
            assert!(
                called.contains(method),
                "the table in calls.rs names `{method}`, which nothing calls"
            );
        }
    }

    #[test]
    fn all_lists_every_op_once() {
        let set: BTreeSet<Op> = Op::ALL.iter().copied().collect();
        assert_eq!(set.len(), Op::ALL.len());
        // Every op but GetCallerIdentity needs at least one action.
        for op in Op::ALL {
            assert!(
                *op == Op::StsGetCallerIdentity || !op.info().needs.is_empty(),
                "{op:?}"
            );
        }
    }

    #[test]
    fn checks_use_real_ids_and_the_partition() {
        let arns = Arns {
            partition: "aws-us-gov".into(),
            account: Some("123456789012".into()),
        };
        let mut register = Call::new(
            Op::Ec2RegisterImage,
            "us-gov-west-1",
            vec![
                Resource::Image(None),
                Resource::Snapshot(Some("snap-1".into())),
            ],
        );
        let plain = |call: &Call| -> Vec<(&str, String, Option<&str>)> {
            call.checks(&arns)
                .into_iter()
                .map(|(action, arn, need)| (action, arn, need.create_action))
                .collect()
        };
        let checks = plain(&register);
        assert_eq!(
            checks,
            vec![
                (
                    "ec2:RegisterImage",
                    "arn:aws-us-gov:ec2:us-gov-west-1::image/*".to_string(),
                    None
                ),
                (
                    "ec2:RegisterImage",
                    "arn:aws-us-gov:ec2:us-gov-west-1::snapshot/snap-1".to_string(),
                    None
                ),
            ]
        );
        register.tags_on_create = true;
        assert_eq!(plain(&register)[2].2, Some("RegisterImage"));
        let put = Call::new(
            Op::SsmPutParameter,
            "us-gov-west-1",
            vec![Resource::Parameter("/os/x".into())],
        );
        assert_eq!(
            plain(&put),
            vec![
                (
                    "ssm:PutParameter",
                    "arn:aws-us-gov:ssm:us-gov-west-1:123456789012:parameter/os/x".to_string(),
                    None
                ),
                ("ec2:DescribeImages", "*".to_string(), None),
            ]
        );
    }

    #[test]
    fn coverage_scanner_sees_split_chains() {
        let text = "let out = ec2\n        .describe_images()\n        .owners(\"self\")\n        .send()\n        .await;\nlet c = ctx.ec2();";
        let found = called_methods(text);
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            vec!["describe_images"]
        );
    }
}
