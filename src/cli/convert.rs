//! What the flags mean to the library: each command's options, built from its flags.

use super::*;

impl AwsFlags {
    /// The flags with what the environment supplies for those not given (read here, not by
    /// clap, so usage errors never show a value from the environment as if typed).
    pub fn with_environment(mut self) -> AwsFlags {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        self.role_arn = self.role_arn.or_else(|| env("IMGPUB_ROLE_ARN"));
        self.external_id = self.external_id.or_else(|| env("IMGPUB_EXTERNAL_ID"));
        self.role_session_name = self
            .role_session_name
            .or_else(|| env("IMGPUB_ROLE_SESSION_NAME"));
        self
    }

    pub fn settings(&self) -> AwsSettings {
        AwsSettings {
            region: self.region.clone(),
            profile: self.profile.clone(),
            credentials_file: self.credentials_file.clone(),
            access_id: self.access_id.clone(),
            secret_key: self.secret_key.clone().map(Secret::new),
            endpoint_url: self.endpoint_url.clone(),
            role_arn: self.role_arn.clone(),
            external_id: self.external_id.clone(),
            role_session_name: self.role_session_name.clone(),
        }
    }
}

impl TransferArgs {
    fn transfer(&self) -> Transfer {
        Transfer {
            part_size: self.part_size,
            concurrency: self.upload_concurrency,
        }
    }
}

impl From<&InitializeArgs> for InitializeOptions {
    fn from(a: &InitializeArgs) -> Self {
        let a = a.clone();
        InitializeOptions {
            bucket: a.bucket,
            role_name: a.role_name,
            export_bucket: a.export_bucket,
            kms_key: a.kms_key,
            license_manager: a.license_manager,
            service_principal: a.service_principal,
            permissions_boundary: a.permissions_boundary,
            abort_incomplete_days: Some(a.abort_incomplete_days).filter(|d| *d != 0),
            harden_trust: a.harden_trust,
            recycle_bin: a.recycle_bin,
        }
    }
}

impl From<UploadArgs> for UploadOptions {
    fn from(a: UploadArgs) -> Self {
        UploadOptions {
            part_size: a.transfer.part_size,
            upload_concurrency: a.transfer.upload_concurrency,
            blocks_in_flight: usize::from(a.blocks_in_flight),
            send_zero_blocks: a.send_zero_blocks,
            parent: a.parent,
            block_maps: a.block_maps,
            via: a.via.via,
            file: a.file,
            bucket: a.bucket,
            name: a.name,
            ami_name: a.ami_name,
            ami_description: a.ami_description,
            arch: a.arch,
            x86_boot_mode: a.x86_boot_mode,
            tpm_support: a.tpm_support,
            imdsv2_only: a.imdsv2_only,
            volume_type: a.volume_type,
            disk_size_gib: a.disk_size_gib,
            disk_size_inspect: a.disk_size_inspect,
            delete_object: a.delete_object,
            existing: match a.force {
                true => Existing::Replace,
                false => Existing::Refuse,
            },
            source_object: a.source_object,
            source_snapshot: a.source_snapshot,
            object_format: a.object_format,
            public: a.public,
            grant_user: a.grant_user,
            grant_user_snapshot: a.grant_user_snapshot,
            grant_organizations: vec![],
            grant_organizational_units: vec![],
            tags: a.tags,
            billing_product_codes: a.billing_product_code,
            role_name: a.role_name,
            import_timeout: a.import_timeout,
            boot_mode: a.boot_mode,
            uefi_data: a.uefi_data,
            sriov: a.sriov_net_support,
            deprecate: match (a.deprecate_in, a.deprecate_at) {
                (Some(after), _) => Some(Deprecate::In(after)),
                (None, Some(at)) => Some(Deprecate::At(at)),
                (None, None) => None,
            },
            encrypted: a.encrypted,
            kms_key: a.kms_key,
        }
    }
}

impl From<UploadObjectArgs> for UploadObjectOptions {
    fn from(a: UploadObjectArgs) -> Self {
        UploadObjectOptions {
            transfer: a.transfer.transfer(),
            file: a.file,
            bucket: a.bucket,
            key: a.key,
            force: a.force,
        }
    }
}

impl From<CopyRegionsArgs> for CopyOptions {
    fn from(a: CopyRegionsArgs) -> Self {
        CopyOptions {
            image: a.image,
            regions: a.regions,
            all_regions: a.all_regions,
            concurrency: a.concurrency,
            timeout: a.timeout,
        }
    }
}

impl From<DeleteImageArgs> for DeleteOptions {
    fn from(a: DeleteImageArgs) -> Self {
        DeleteOptions {
            images: (&a.images).into(),
            ami: a.ami,
            snapshot: a.snapshot,
            allow_missing: a.allow_missing,
            with_snapshots: a.with_snapshots,
            all_regions: a.all_regions,
        }
    }
}

impl PermissionArgs {
    pub fn command(&self, change: Change) -> Permissions {
        Permissions {
            opts: GrantOptions {
                change,
                users: self.users.clone(),
                public: self.public,
                organizations: self.organizations.clone(),
                organizational_units: self.organizational_units.clone(),
                snapshot: self.snapshot,
            },
            images: (&self.images).into(),
        }
    }
}

impl From<&ImageSelection> for imgpub::ImageSelection {
    fn from(a: &ImageSelection) -> Self {
        imgpub::ImageSelection {
            images: a.images.clone(),
            images_from: a.images_from.clone(),
        }
    }
}

impl From<&PublishSsmArgs> for PublishSsmOptions {
    fn from(a: &PublishSsmArgs) -> Self {
        PublishSsmOptions {
            images: (&a.images).into(),
            parameters: a.parameters.clone(),
            overwrite: a.overwrite,
            validation_timeout: a.validation_timeout,
        }
    }
}

impl From<VerifySnapshotArgs> for VerifySnapshotOptions {
    fn from(a: VerifySnapshotArgs) -> Self {
        VerifySnapshotOptions {
            file: a.file,
            snapshot: a.snapshot,
            blocks_in_flight: usize::from(a.blocks_in_flight),
        }
    }
}

impl From<&ListRegionsArgs> for ListRegionsOptions {
    fn from(a: &ListRegionsArgs) -> Self {
        ListRegionsOptions {
            disabled: a.disabled,
            all: a.all,
        }
    }
}

impl From<&PolicyArgs> for PrintPolicy {
    fn from(a: &PolicyArgs) -> Self {
        PrintPolicy {
            opts: a.into(),
            format: match a.format {
                PolicyFormat::Json => imgpub::PolicyFormat::Json,
                PolicyFormat::Table => imgpub::PolicyFormat::Table,
            },
        }
    }
}

impl UploadArgs {
    /// The stages of `stage`, as these flags ask.
    pub fn publish(self, stage: Stage) -> Publish {
        Publish {
            stage,
            opts: self.into(),
        }
    }
}

impl PolicyScopeArgs {
    fn options(&self) -> PolicyOptions {
        PolicyOptions {
            commands: self.commands.clone(),
            bucket: self.bucket.clone(),
            regions: self.regions.clone(),
            source_regions: self.source_region.clone(),
            ssm_prefix: self.ssm_prefix.clone(),
            public: self.public,
            share_with: self.share_with.clone(),
            role_name: self.role_name.clone(),
            partition: None,
            account: None,
            via: self.via.via,
            principal: None,
            gc_tags: self.gc_tags.clone(),
            kms_keys: self.kms_keys.clone(),
            delta: self.delta,
            protect: self.protect,
        }
    }
}

impl From<&PolicyArgs> for PolicyOptions {
    fn from(a: &PolicyArgs) -> Self {
        PolicyOptions {
            partition: a.partition.clone(),
            account: a.account.clone(),
            principal: a.principal.clone(),
            ..a.scope.options()
        }
    }
}

impl CreatePublisherArgs {
    /// Without `--role-arn`, the global `--external-id` is the new role's (taken out of
    /// `flags`), not one to assume a role with.
    pub fn options(&self, mut flags: AwsFlags) -> (AwsFlags, PublisherOptions) {
        let external_id = match flags.role_arn {
            None => flags.external_id.take(),
            Some(_) => None,
        };
        let opts = PublisherOptions {
            role: self.role.clone(),
            user: self.user.clone(),
            trust_principal: self.trust_principal.clone(),
            trust_account: self.trust_account.clone(),
            external_id,
            generate_external_id: self.generate_external_id,
            github_repo: self.github_repo.clone(),
            github_any_ref: self.github_any_ref,
            permissions_boundary: self.permissions_boundary.clone(),
            adopt: self.adopt,
            replace_trust: self.replace_trust,
            rotate_key: self.rotate_key,
            delete_old_key: self.delete_old_key,
            key_file: self.key_file.clone(),
            policy: self.scope.options(),
        };
        (flags, opts)
    }
}

impl From<&EnsurePublicArgs> for EnsurePublicOptions {
    fn from(a: &EnsurePublicArgs) -> Self {
        EnsurePublicOptions {
            tags: a.tags.clone(),
            ami: a.ami.clone(),
            regions: a.regions.clone(),
            all_regions: a.all_regions,
        }
    }
}

impl From<&GcArgs> for GcOptions {
    fn from(a: &GcArgs) -> Self {
        GcOptions {
            duration: a.duration,
            tags: a.tags.clone(),
            collect: if a.images {
                Collect::Images {
                    include_public: a.include_public,
                }
            } else {
                Collect::Instances
            },
            regions: a.regions.clone(),
            all_regions: a.all_regions,
        }
    }
}
