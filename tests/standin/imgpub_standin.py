"""imgpub's local AWS stand-in: moto server plus what moto lacks or gets wrong.

Run: python imgpub_standin.py [--host 127.0.0.1] [--port 0] [--tls-dir DIR]
Prints "PORT <n>" on stdout once it listens (port 0 picks a free one), then serves until
killed. With --tls-dir it also serves the same over HTTPS on a second port, with a
certificate for 127.0.0.1 issued by a throwaway CA written to DIR/ca.pem, and prints
"TLS_PORT <n>" on the same line. Everything moto serves works as usual; on top of it:

* EC2 ImportSnapshot / DescribeImportSnapshotTasks: a task that goes active (pending,
  then validating/converting with Progress) to completed over IMPORT_SECONDS; it reads
  the object from moto's S3, checks the format as AWS does, and ends `deleted` with an
  AWS-style "ClientError: ..." StatusMessage for a missing object or a bad image. An
  unknown role is refused at once. ClientToken makes the call idempotent.
* EC2 RegisterImage that keeps what AWS keeps (architecture, boot mode, ENA, SR-IOV,
  IMDS, TPM, block devices, billing products, tags) and refuses what AWS refuses
  (duplicate names, unknown snapshots, malformed names, volumes smaller than the
  snapshot, TPM without UEFI, arm64 without UEFI).
* EC2 ModifySnapshotAttribute honours the structured form the SDKs send
  (CreateVolumePermission.Add.N.UserId / .Group); moto reads only the flat one
  (OperationType + UserId.N / UserGroup.N), which still works.
* STS AssumeRole enforces an `sts:ExternalId` condition in the role's trust policy.
* With "enforce_iam" (POST /_standin/config), requests signed by a created user's or role
  session's keys are allowed or denied by that identity's policies, judged by
  @cloud-copilot/iam-simulate (iam-eval/) on real ARNs and context keys, with AWS's error
  shapes; IAM SimulatePrincipalPolicy answers from the same evaluator.
* Control endpoints under /_standin/ (JSON):
    GET  /_standin/requests          counts of requests per "service.Action" (EC2 DryRun
                                     requests as "ec2.Action:DryRun")
    GET  /_standin/log               {"now", "requests": [{"t", "call", "region"}],
                                     "events": [{"t", "event", "id"}]}: every request as it
                                     arrived and the moments the stand-in fixed in advance
                                     ("import-ends": a good image's import task completes;
                                     "copy-ends": a copy leaves pending), in seconds since
                                     the stand-in started
    GET  /_standin/payloads          per S3 "Action": how its payloads were signed
                                     ({"signed", "UNSIGNED-PAYLOAD", ...}) and how
                                     many carried x-amz-checksum-crc32c ("crc32c")
    POST /_standin/requests/reset    zero the counts (and the payload records)
    GET  /_standin/config            current settings
    POST /_standin/config            {"import_seconds": 2.0, "latency_seconds": 0.1, ...}
    POST /_standin/faults            {"action": "UploadPart", "status": 503,
                                      "code": "SlowDown", "count": 2,
                                      "delay": 0, "drop": false}
                                     the next `count` matching requests fail that way
                                     (or are delayed by `delay` s, or have their
                                     connection dropped); "action" "*" matches all;
                                     optional "service" and "region" narrow it.
                                     With "after": true the request is carried out
                                     first and then its answer is lost (the error
                                     replaces it, or the connection drops): what a
                                     client's retry of a non-idempotent call meets.
                                     JSON-protocol services (SSM) get a JSON error.
                                     (A completed multipart upload is gone, as in S3:
                                     completing it again answers 404 NoSuchUpload.)
                                     With "hold": true the request waits, unserved,
                                     until POST /_standin/release: a test changes
                                     things while it is in flight. "skip": n lets n
                                     matching requests through first (the n+1-th is
                                     the one faulted).
    DELETE /_standin/faults          clear all faults
    GET  /_standin/inflight          {"inflight": n, "held": m}: AWS requests being
                                     served now, and those waiting for a release
    POST /_standin/release           let every held request go on
    POST /_standin/chaos             {"seed": 7, "rate": 0.05, "after_share": 0.5}
                                     from now on each request fails with probability
                                     `rate`, drawn from a generator seeded with `seed`:
                                     a 5xx, the service's throttling error, a dropped
                                     connection or a slow answer, a share `after_share`
                                     of them after the request took effect
    GET  /_standin/chaos             the faults injected so far, by kind
    DELETE /_standin/chaos           stop injecting
    GET  /_standin/needs             every IAM check made under enforce_iam: {"op", "action",
                                     "arn", "condition_keys"}
    POST /_standin/keys              {"account", "partition"}: the access key of an admin
                                     (an IAM user allowed everything) of that account and
                                     partition; answers {"AccessKeyId", "SecretAccessKey"}
    POST /_standin/kms/keys          {"region", "account"?}: makes a customer managed KMS
                                     key (default key policy); answers {"arn"}
    GET  /_standin/images/<ami-id>   what RegisterImage was given for that AMI,
                                     including billing products (which DescribeImages,
                                     like AWS, does not show)
    POST /_standin/usage-reports/<id> {"creation_time"}: when an AMI usage report was made
                                     (a test's clock; reports go 30 days after); who uses
                                     an AMI is POST /_standin/images/<ami-id> {"usage"}
    POST /_standin/rbin/elapse       {"days": N}: the Recycle Bin's clock moves N days
                                     (what outlives its retention is gone); see
                                     standin_rbin.py for the rules and the bin
"""

from __future__ import annotations

import base64
import argparse
import datetime
import hashlib
import io
import json
import os
import re
import struct
import sys
import threading
import time
from typing import Any
from urllib.parse import parse_qs

# moto's bundled AMIs make every new EC2 backend slow to create and clutter listings.
os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")

from moto.core.responses import ActionResult, EmptyResult  # noqa: E402
from moto.ec2.exceptions import EC2ClientError  # noqa: E402
from moto.ec2.models.amis import Ami  # noqa: E402
from moto.ec2.responses import EC2Response  # noqa: E402
from moto.iam.access_control import IAMRequestBase  # noqa: E402
from moto.iam.models import iam_backends  # noqa: E402
from moto.moto_server.werkzeug_app import (  # noqa: E402
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.s3.models import s3_backends  # noqa: E402
from moto.servicequotas.models import ServiceQuotasBackend  # noqa: E402
from moto.sts.exceptions import STSClientError  # noqa: E402
from moto.sts.models import STSBackend  # noqa: E402
from moto.utilities.utils import PARTITION_NAMES, get_partition  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import standin_ebs  # noqa: E402
import standin_rbin  # noqa: E402

GIB = 1 << 30

# When the stand-in started (time.monotonic()); the request log counts from here.
STARTED = time.monotonic()
# Moments the stand-in decided in advance (an import completes, a copy becomes available),
# for GET /_standin/log: tests hold a client's reaction to them.
EVENTS: list[dict[str, Any]] = []
EVENTS_LOCK = threading.Lock()


def schedule_event(kind: str, resource: str, at: float) -> None:
    """Records that `resource` reaches `kind` at monotonic time `at`."""
    with EVENTS_LOCK:
        EVENTS.append({"t": round(at - STARTED, 3), "event": kind, "id": resource})


SETTINGS: dict[str, Any] = {
    "import_seconds": float(os.environ.get("STANDIN_IMPORT_SECONDS", "2")),
    # CopyImage: how long a copy stays pending, and regions where copies fail.
    "copy_seconds": float(os.environ.get("STANDIN_COPY_SECONDS", "2")),
    "copy_fail_regions": [],
    # "There is a limit of 20 concurrent snapshot copy requests per destination. If you
    # exceed this quota, you receive a ResourceLimitExceeded error" (EBS User Guide, "Copy
    # an Amazon EBS snapshot"; EBS quotas: not adjustable). A test may lower it.
    "snapshot_copies_per_destination": 20,
    # Opt-in Regions enabled for the account (DescribeRegions lists them, "opted-in").
    "opted_in_regions": [],
    # Requests signed by created users' and roles' keys are checked against their policies.
    "enforce_iam": False,
    # The account's block public access (moto has none): "unblocked", "block-new-sharing",
    # and for snapshots also "block-all-sharing". While on, nothing can be made public.
    "image_block_public_access": "unblocked",
    "snapshot_block_public_access": "unblocked",
    # AWS's "Public AMIs" quota per region (5 by default): a number for every region, or
    # {region: number}. None, and a region not named: an account whose quota was raised
    # (RAISED_PUBLIC_AMI_QUOTA), so tests that make many AMIs public need not raise it.
    # ModifyImageAttribute enforces it and Service Quotas' GetServiceQuota reports it.
    "public_ami_quota": None,
    # Seconds every AWS request waits before it is served: a round trip to a region far
    # away, for measuring what a client does in sequence.
    "latency_seconds": 0.0,
    # EBS direct: how long a snapshot stays pending after CompleteSnapshot.
    "ebs_complete_seconds": float(os.environ.get("STANDIN_EBS_COMPLETE_SECONDS", "1")),
    # SSM aws:ec2:image: how long the asynchronous check of the AMI takes, and AMIs the
    # check rejects whatever they are (AWS's reasons are its own: a tests' control).
    "ssm_validation_seconds": 0.3,
    # STS: the length of every assumed-role session, in seconds, whatever DurationSeconds
    # asked (AWS allows 900 to 43200): a test's clock, sped up, so a wait outlives a session.
    "sts_session_seconds": None,
    # DescribeImportSnapshotTasks lists tasks "currently active or were completed or
    # canceled in the previous 7 days" (API reference); tests shorten it.
    "import_task_retention_seconds": 7 * 86400.0,
    # EC2 and IAM are eventually consistent (see _not_yet_visible, _iam_not_yet_visible);
    # how long a new AMI or snapshot, or role or user, stays unknown is not documented, and
    # the two services propagate apart. 0: visible at once.
    "consistency_seconds": 0.0,
    "iam_consistency_seconds": 0.0,
    "ssm_reject_images": [],
    # AMI usage reports: how long a new one stays pending (AWS does not say), and AMIs whose
    # reports end in `error` (AWS's reasons are its own: a test's control).
    "usage_report_seconds": 0.0,
    "usage_report_errors": [],
    # Recycle Bin: how long an account's first retention rule in a Region stays pending
    # ("it can take up to 30 minutes for the rule to become active": Recycle Bin User Guide).
    "rbin_rule_pending_seconds": 0.0,
}

# Where AWS documents no answer, the stand-in gives each plausible one, picked by a seed
# (STANDIN_SEED, else random; printed at start so a failure can be replayed), and imgpub
# must cope with every one. POST /_standin/config can set each choice directly.
SEED = int(os.environ.get("STANDIN_SEED") or int.from_bytes(os.urandom(4), "little"))
UNDOCUMENTED = {
    # A CompleteSnapshot repeated after its answer was lost: refused as not pending
    # (ValidationException), or answered with the snapshot's status.
    "ebs_repeat_complete": ["refused", "accepted"],
    # A CompleteMultipartUpload repeated after its answer was lost: S3 has forgotten the
    # upload (404 NoSuchUpload), or answers the completed object again (200; seen on S3 for
    # an identical retry, not documented).
    "s3_repeat_complete": ["no-such-upload", "ok"],
    # ImportSnapshot in a region with EBS encryption by default: the VM Import/Export pages
    # say nothing of it. Encrypted with the default key (as every new volume and snapshot
    # copy there), or as the request asked.
    "import_under_default_encryption": ["encrypted", "as-asked"],
    # The code of a request signed with expired session credentials: AWS's common errors
    # name ExpiredTokenException (403), services are seen answering ExpiredToken (400).
    "expired_token_code": ["ExpiredToken", "ExpiredTokenException"],
    # A CopyImage beyond the concurrent snapshot copies a destination takes: the EBS User
    # Guide says CopySnapshot answers ResourceLimitExceeded; of CopyImage (which copies
    # the AMI's snapshots) nothing is said. Refused the same way, or accepted with its
    # snapshot copy queued until a running one ends.
    "copy_image_over_limit": ["refused", "queued"],
    # DeregisterImage of an AMI under deregistration protection: refused, but the
    # EnableImageDeregistrationProtection and DeregisterImage references name no code.
    "deregister_protected_code": ["OperationNotPermitted", "InvalidParameterValue"],
    # EBS direct StartSnapshot on a parent still pending, or larger than the new volume: the
    # StartSnapshot reference says neither; refused (ValidationException) or taken.
    "ebs_parent_pending": ["refused", "accepted"],
    "ebs_parent_larger": ["refused", "accepted"],
    # A disabled AMI deregistered into the Recycle Bin and restored: "the AMI is immediately
    # available for use" (Recycle Bin User Guide) was written before AMIs could be disabled,
    # and "Retention rules also apply to disabled AMIs" says nothing of the state restored.
    # Back as it was (disabled), or available.
    "rbin_restored_disabled": ["disabled", "available"],
    # An AMI usage report's entries: whether the owner's own account is listed ("how your
    # image is used across other AWS accounts" leaves it open), and whether an account
    # asked for that uses none is listed with UsageCount 0 or left out.
    "usage_report_owner": ["omitted", "listed"],
    "usage_report_zero": ["omitted", "listed"],
    # A second report for an AMI while one is pending ("In-progress (pending) AMI usage
    # reports per AMI: 1", EC2 User Guide, "View your AMI usage"): refused, code unnamed.
    "usage_report_pending_code": ["ResourceLimitExceeded", "IncorrectState"],
    # RestoreImageFromRecycleBin while the AMI's snapshots are still in the bin, or gone
    # ("you must first restore all of its associated snapshots"; "If the snapshots ... are
    # deleted from the Recycle Bin, the AMI is no longer recoverable": Recycle Bin User
    # Guide): refused, with no code named.
    "rbin_restore_refused_code": ["InvalidParameterValue", "IncorrectState"],
    # ListImagesInRecycleBin or ListSnapshotsInRecycleBin naming an id not in the bin:
    # the API reference says nothing. Left out of the answer, or refused as not found.
    "rbin_list_unknown": ["omitted", "not-found"],
    # RunInstances from a disabled AMI: refused ("you can't launch new instances from it":
    # EC2 User Guide, "Disable an AMI"), with no code named.
    "run_disabled_code": ["InvalidAMIID.Unavailable", "IncorrectState"],
    # CopyImage from a Region of another partition: not supported ("CopyImage does not
    # support ... Cross-partition copies (use CreateStoreImageTask instead)", CopyImage API
    # reference), with no code named.
    "copy_cross_partition_code": ["InvalidParameterValue", "InvalidRequest"],
    # CopyImage of an AMI shared with the caller whose snapshot is not: "the owner of the
    # source AMI must grant you read permissions for the storage that backs the AMI, which
    # is the associated EBS snapshot" (EC2 User Guide, "Copy an AMI", cross-account
    # copying), with no code named.
    "copy_shared_unreadable_code": ["InvalidRequest", "InvalidSnapshot.NotFound"],
    # The kms:ViaService of the EBS direct APIs' use of a key: the KMS Developer Guide
    # ("AWS KMS condition keys", kms:ViaService) lists EBS as "ec2.AWS_region.amazonaws.com
    # (EBS only)", and the EBS direct pages name no value. EC2's name, or ebs's own.
    "ebs_direct_via_service": ["ec2", "ebs"],
    # The region in the kms:ViaService of a cross-region CopyImage's use of the source
    # snapshot's key: the request's (destination) region, or the key's (source); unsaid.
    "copy_source_key_via": ["destination", "source"],
    # Credentials used in a partition they do not belong to are unknown there; AWS's common
    # errors list both codes for a key "that does not exist in our records" without saying
    # which service answers which.
    "foreign_key_code": ["InvalidClientTokenId", "UnrecognizedClientException"],
}


def _choose_undocumented(seed: int) -> dict[str, str]:
    import random

    rng = random.Random(seed)
    return {name: rng.choice(options) for name, options in sorted(UNDOCUMENTED.items())}


SETTINGS["seed"] = SEED
SETTINGS.update(_choose_undocumented(SEED))

EBS = standin_ebs.EbsDirect(SETTINGS)
RBIN = standin_rbin.RecycleBin(SETTINGS)


# --------------------------------------------------------------------------------------
# Image checks: what VM Import/Export accepts.


def _read_range(key: Any, offset: int, length: int) -> bytes:
    buf = key._value_buffer
    with key.lock:
        buf.seek(offset)
        return buf.read(length)


GD_AT_END = 0xFFFFFFFFFFFFFFFF


def vmdk_grains_present(key: Any, head: bytes) -> bool:
    """Whether every grain the grain tables point at lies inside the file."""
    size = key.size
    if size < 512:
        return False
    grain_sectors = struct.unpack_from("<Q", head, 20)[0]
    gtes_per_gt = struct.unpack_from("<I", head, 44)[0]
    gd_offset = struct.unpack_from("<Q", head, 56)[0]
    if gd_offset == GD_AT_END:
        # The footer (a header copy, one sector before the end-of-stream marker) has it.
        footer = _read_range(key, size - 1024, 512)
        if footer[:4] != b"KDMV":
            return False
        gd_offset = struct.unpack_from("<Q", footer, 56)[0]
    capacity = struct.unpack_from("<Q", head, 12)[0]
    if not grain_sectors or not gtes_per_gt:
        return False
    gdes = -(-capacity // (grain_sectors * gtes_per_gt))
    gd = _read_range(key, gd_offset * 512, gdes * 4)
    if len(gd) < gdes * 4:
        return False
    for gt_sector in struct.unpack(f"<{gdes}I", gd):
        if gt_sector == 0:
            continue
        gt = _read_range(key, gt_sector * 512, gtes_per_gt * 4)
        if len(gt) < gtes_per_gt * 4:
            return False
        for grain in struct.unpack(f"<{gtes_per_gt}I", gt):
            if grain <= 1:  # unallocated or zero grain
                continue
            marker = _read_range(key, grain * 512, 12)
            if len(marker) < 12:
                return False
            data_size = struct.unpack_from("<I", marker, 8)[0]
            if grain * 512 + 12 + data_size > size:
                return False
    return True


def check_image(fmt: str, key: Any) -> tuple[int, str | None]:
    """Returns (virtual size in bytes, None) or (0, "ClientError: ...")."""
    size = key.size
    head = _read_range(key, 0, 4096)
    if size == 0:
        return 0, "ClientError: Disk validation failed [The file is empty]"
    if fmt == "VMDK":
        if head[:4] != b"KDMV":
            return 0, "ClientError: Disk validation failed [Unsupported VMDK File Format]"
        capacity = struct.unpack_from("<Q", head, 12)[0] * 512
        desc_off, desc_len = struct.unpack_from("<QQ", head, 28)
        desc = _read_range(key, desc_off * 512, min(desc_len * 512, 65536))
        if b'createType="streamOptimized"' not in desc:
            return 0, (
                "ClientError: Disk validation failed [Unsupported VMDK File Format: "
                "only streamOptimized VMDK images can be imported]"
            )
        if not vmdk_grains_present(key, head):
            return 0, "ClientError: Disk validation failed [Invalid VMDK: the file is truncated]"
        return capacity, None
    if fmt == "RAW":
        for magic, name in [
            (b"QFI\xfb", "qcow2"),
            (b"KDMV", "VMDK"),
            (b"conectix", "VHD"),
            (b"vhdxfile", "VHDX"),
        ]:
            if head.startswith(magic):
                return 0, (
                    "ClientError: Disk validation failed [Unsupported specified file "
                    f"format: the image is {name}, not RAW]"
                )
        return size, None
    if fmt in ("VHD", "VHDX"):
        tail = _read_range(key, max(size - 512, 0), 512)
        if fmt == "VHD" and tail[:8] == b"conectix":
            return struct.unpack_from(">Q", tail, 48)[0], None
        if fmt == "VHDX" and head[:8] == b"vhdxfile":
            return size, None
        return 0, f"ClientError: Disk validation failed [Unsupported {fmt} File Format]"
    return 0, f"ClientError: Unsupported image format {fmt}"


# --------------------------------------------------------------------------------------
# ImportSnapshot


class ImportTask:
    def __init__(self, backend: Any, task_id: str, params: dict[str, Any]):
        self.backend = backend
        self.id = task_id
        self.started = time.monotonic()
        self.duration = SETTINGS["import_seconds"]
        # Describe calls after this moment see a good image's task completed (a bad image's
        # ends earlier, deleted at 30 % of the way).
        schedule_event("import-ends", task_id, self.started + self.duration)
        container = params.get("DiskContainer") or {}
        self.format = (container.get("Format") or "").upper()
        bucket = container.get("UserBucket") or {}
        self.bucket = bucket.get("S3Bucket", "")
        self.key = bucket.get("S3Key", "")
        self.url = container.get("Url")
        self.description = params.get("Description", "")
        self.encrypted = str(params.get("Encrypted", "")).lower() == "true"
        self.kms_key_id = params.get("KmsKeyId")
        self.role = params.get("RoleName") or "vmimport"
        self.client_token = params.get("ClientToken")
        self.tags = []
        for spec in params.get("TagSpecifications") or []:
            if spec.get("ResourceType") == "import-snapshot-task":
                self.tags += spec.get("Tags") or []
        self.checked = False
        self.error: str | None = None
        self.virtual_size = 0
        self.object_size = 0
        self.snapshot_id: str | None = None
        self.lock = threading.Lock()
        # When the task ended (completed or deleted), for its retention in listings.
        self.ended_at: float | None = None
        # The task runs whether or not anyone asks how it is going: at its end the snapshot
        # is made (or the task fails), as VM Import/Export does on its own.
        timer = threading.Timer(self.duration, self.state)
        timer.daemon = True
        timer.start()

    def listed(self, now: float) -> bool:
        """Still in DescribeImportSnapshotTasks: active, or ended within the retention."""
        return self.ended_at is None or now - self.ended_at <= SETTINGS["import_task_retention_seconds"]

    def _check(self) -> None:
        account = self.backend.account_id
        s3 = s3_backends[account][get_partition(self.backend.region_name)]
        try:
            key = s3.get_object(self.bucket, self.key)
        except Exception:  # noqa: BLE001 - any S3 failure is a bad source location
            key = None
        if key is None:
            self.error = (
                "ClientError: Disk validation failed [Unable to read the S3 object "
                f"s3://{self.bucket}/{self.key}: it does not exist or the role cannot read it]"
            )
            return
        if _young_iam_entity(account, "RoleName", self.role):
            # See _iam_not_yet_visible; VM Import/Export's own words for a role it cannot use.
            self.error = (f"ClientError: The service role {self.role} provided does not exist "
                          "or does not have sufficient permissions")
            return
        denied = self._role_denied(account)
        if denied:
            self.error = (
                f"ClientError: Access Denied: the role {self.role} may not {denied}"
            )
            return
        self.object_size = key.size
        self.virtual_size, self.error = check_image(self.format, key)

    def _role_denied(self, account: str) -> str | None:
        """With enforce_iam, VM Import/Export reads the object and encrypts the snapshot as
        the role: the IAM action the role's policies do not allow and its resource, or None."""
        if not SETTINGS["enforce_iam"]:
            return None
        partition = get_partition(self.backend.region_name)
        backend = iam_backends[account][partition]
        role = identity_of_role(backend, account, self.role, None)
        bucket_arn = f"arn:{partition}:s3:::{self.bucket}"
        # The bucket's account, as every S3 request carries it (see needed_for).
        owner_account = _bucket_account(self.bucket, account)
        for action, resource in [
            ("s3:GetBucketLocation", bucket_arn),
            ("s3:ListBucket", bucket_arn),
            ("s3:GetObject", f"{bucket_arn}/{self.key}"),
        ]:
            context = {"aws:RequestedRegion": self.backend.region_name,
                       "aws:PrincipalAccount": account,
                       "s3:ResourceAccount": owner_account,
                       "aws:ResourceAccount": owner_account}
            if role.decide(action, resource, context) != "Allowed":
                return f"{action} s3://{self.bucket}/{self.key}"
        # The role encrypts the snapshot: with a customer managed key it must be allowed
        # "kms:CreateGrant, kms:Decrypt, kms:DescribeKey, kms:Encrypt, kms:GenerateDataKey*,
        # kms:ReEncrypt*" on it (VM Import/Export User Guide, "Required service role",
        # the policy for importing with an encrypted snapshot).
        # Encrypted as _finish decides: asked for, or the account encrypts by default.
        if self.encrypted or self.kms_key_id or (
                self.backend.ebs_encryption_by_default
                and SETTINGS["import_under_default_encryption"] == "encrypted"):
            from moto.ec2.models import ec2_backends

            key = self.kms_key_id or standin_ebs.default_ebs_key(
                ec2_backends[account][self.backend.region_name])
            actions = ("kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:Encrypt",
                       "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext",
                       "kms:ReEncryptFrom", "kms:ReEncryptTo")
            # Which kms:ViaService VM Import/Export's use carries, AWS does not say: none.
            for action, resource, context in _kms_needs(
                    account, self.backend.region_name, [key], actions, None):
                if role.decide(action, resource, context) != "Allowed":
                    return f"{action} on the key {resource}"
        return None

    def _finish(self) -> None:
        size_gib = max(1, -(-self.virtual_size // GIB))
        zone = self.backend.region_name + "a"
        encrypted = self.encrypted or self.kms_key_id is not None or (
            self.backend.ebs_encryption_by_default
            and SETTINGS["import_under_default_encryption"] == "encrypted")
        volume = self.backend.create_volume(
            size=size_gib, zone_name=zone, encrypted=encrypted,
            kms_key_id=self.kms_key_id if encrypted else None,
        )
        snap = self.backend.create_snapshot(
            volume.id, f"Created by AWS-VMImport service for {self.id}"
        )
        # moto's snapshot does not keep the volume's key: ImportSnapshot's KmsKeyId (or the
        # account's default EBS key) is the snapshot's.
        snap.kms_key_id = volume.kms_key_id if encrypted else None
        self.backend.delete_volume(volume.id)
        self.snapshot_id = snap.id

    def state(self) -> dict[str, Any]:
        """Advances the task to where the clock says it is and describes it."""
        with self.lock:
            frac = (time.monotonic() - self.started) / max(self.duration, 1e-6)
            detail: dict[str, Any] = {
                "Description": self.description,
                "Format": self.format,
                "UserBucket": {"S3Bucket": self.bucket, "S3Key": self.key},
            }
            if frac >= 0.3 and not self.checked:
                self.checked = True
                self._check()
            if self.checked and self.error:
                detail.update(Status="deleted", StatusMessage=self.error)
                self.ended_at = self.ended_at or time.monotonic()
            elif frac < 0.3:
                detail.update(Status="active", StatusMessage="pending")
            elif frac < 1.0:
                detail.update(
                    Status="active",
                    StatusMessage="downloading/converting",
                    Progress=str(int(10 + 80 * (frac - 0.3) / 0.7)),
                )
            else:
                if self.snapshot_id is None:
                    self._finish()
                    self.ended_at = time.monotonic()
                detail.update(
                    Status="completed",
                    SnapshotId=self.snapshot_id,
                    DiskImageSize=float(self.object_size),
                )
            return {
                "Description": self.description,
                "ImportTaskId": self.id,
                "SnapshotTaskDetail": detail,
                "Tags": self.tags,
            }


def _tasks(backend: Any) -> dict[str, ImportTask]:
    if not hasattr(backend, "_standin_import_tasks"):
        backend._standin_import_tasks = {}
    return backend._standin_import_tasks


def import_snapshot(self: EC2Response) -> ActionResult:
    params = self._get_params()
    self.error_on_dryrun()
    backend = self.ec2_backend
    tasks = _tasks(backend)
    token = params.get("ClientToken")
    if token:
        for task in tasks.values():
            if task.client_token == token:
                return ActionResult(task.state())
    role = params.get("RoleName") or "vmimport"
    iam = iam_backends[backend.account_id][get_partition(backend.region_name)]
    if not any(r.name == role for r in iam.get_roles()):
        raise EC2ClientError(
            "InvalidParameter",
            f"The service role {role} provided does not exist or does not have sufficient permissions",
        )
    container = params.get("DiskContainer") or {}
    fmt = (container.get("Format") or "").upper()
    if fmt not in ("VMDK", "RAW", "VHD", "VHDX"):
        raise EC2ClientError(
            "InvalidParameter", f"Unsupported disk format {container.get('Format')!r}"
        )
    if not (container.get("UserBucket") or {}).get("S3Bucket") and not container.get("Url"):
        raise EC2ClientError("InvalidParameter", "DiskContainer needs UserBucket or Url")
    seed = f"{time.time_ns()}{len(tasks)}".encode()
    task_id = "import-snap-" + hashlib.sha256(seed).hexdigest()[:17]
    task = ImportTask(backend, task_id, params)
    tasks[task_id] = task
    return ActionResult(task.state())


def describe_import_snapshot_tasks(self: EC2Response) -> ActionResult:
    params = self._get_params()
    now = time.monotonic()
    tasks = {i: t for i, t in _tasks(self.ec2_backend).items() if t.listed(now)}
    ids = params.get("ImportTaskIds") or []
    for task_id in ids:
        if task_id not in tasks:
            raise EC2ClientError(
                "InvalidConversionTaskId.Malformed",
                f"The import task '{task_id}' does not exist",
            )
    chosen = [tasks[i] for i in ids] if ids else list(tasks.values())
    states = [t.state() for t in chosen]
    for flt in params.get("Filters") or []:
        if flt.get("Name") == "task-state":
            wanted = set(flt.get("Values") or [])
            states = [s for s in states if s["SnapshotTaskDetail"]["Status"] in wanted]
    return ActionResult({"ImportSnapshotTasks": states})


# --------------------------------------------------------------------------------------
# RegisterImage


AMI_NAME = re.compile(r"^[A-Za-z0-9()\[\] ./\-'@_]{3,128}$")
ARCHES = {"i386", "x86_64", "arm64", "x86_64_mac", "arm64_mac"}
BOOT_MODES = {"legacy-bios", "uefi", "uefi-preferred"}


class RegisteredAmi(Ami):
    """An AMI that remembers what RegisterImage was given."""

    # moto files model classes by the second part of their module name.
    __module__ = "moto.ec2.standin"

    def __init__(self, backend: Any, ami_id: str, params: dict[str, Any], bdm: list[dict]):
        super().__init__(
            backend,
            ami_id,
            name=params.get("Name"),
            description=params.get("Description") or "",
            virtualization_type=params.get("VirtualizationType") or "paravirtual",
            architecture=params.get("Architecture") or "x86_64",
            root_device_name=params.get("RootDeviceName") or "/dev/sda1",
            root_device_type="ebs",
            sriov=params.get("SriovNetSupport"),
            boot_mode=params.get("BootMode"),
            hypervisor="xen",
        )
        # Ami() always makes a snapshot of its own; an AMI registered from our snapshot
        # points at that one instead.
        backend.snapshots.pop(self.ebs_snapshot.id, None)
        self.ebs_snapshot = None
        self._bdm = bdm
        self.ena_support = bool(params.get("EnaSupport"))
        self.sriov_net_support = params.get("SriovNetSupport")
        self.imds_support = params.get("ImdsSupport")
        self.imds = self.imds_support
        self.tpm_support = params.get("TpmSupport")
        self.tmp = self.tpm_support  # moto's DescribeImageAttribute reads this name
        self.billing_products = list(params.get("BillingProducts") or [])
        self.uefi = params.get("UefiData")  # moto's DescribeImageAttribute reads this name
        self.deprecation_time: str | None = None
        self.register_params = params

    @property
    def block_device_mappings(self) -> list[dict[str, Any]]:
        return self._bdm

    def get_filter_value(self, filter_name: str, method_name: str | None = None) -> Any:
        # DescribeImages filter "block-device-mapping.snapshot-id" (DescribeImages API
        # reference, Filters); moto has none.
        if filter_name == "block-device-mapping.snapshot-id":
            return [(m.get("Ebs") or {}).get("SnapshotId") for m in self._bdm]
        return super().get_filter_value(filter_name, method_name)

    @property
    def bdm(self) -> list[dict[str, Any]]:
        return self._bdm


def _invalid(code: str, message: str) -> EC2ClientError:
    return EC2ClientError(code, message)


def register_image(self: EC2Response) -> ActionResult:
    params = self._get_params()
    self.error_on_dryrun()
    backend = self.ec2_backend
    name = params.get("Name") or ""
    if not AMI_NAME.match(name):
        raise _invalid(
            "InvalidAMIName.Malformed",
            "AMI names must be between 3 and 128 characters long, and may contain letters, "
            "numbers, '(', ')', '.', '-', '/', '_', ' ', '[', ']', '@' and '''",
        )
    for ami in backend.amis.values():
        if ami.name == name and ami.owner_id == backend.account_id:
            raise _invalid(
                "InvalidAMIName.Duplicate",
                f"AMI name {name} is already in use by AMI {ami.id}",
            )
    arch = params.get("Architecture") or "x86_64"
    if arch not in ARCHES:
        raise _invalid("InvalidParameterValue", f"Invalid value '{arch}' for architecture")
    boot = params.get("BootMode")
    if boot is not None and boot not in BOOT_MODES:
        raise _invalid("InvalidParameterValue", f"Invalid value '{boot}' for bootMode")
    if arch.startswith("arm64") and boot not in (None, "uefi"):
        raise _invalid(
            "InvalidParameterCombination", "arm64 AMIs support only the uefi boot mode"
        )
    tpm = params.get("TpmSupport")
    if tpm is not None:
        if tpm != "v2.0":
            raise _invalid("InvalidParameterValue", f"Invalid value '{tpm}' for tpmSupport")
        if boot not in ("uefi", "uefi-preferred"):
            raise _invalid(
                "InvalidParameterCombination", "NitroTPM (tpmSupport) requires a UEFI boot mode"
            )
    imds = params.get("ImdsSupport")
    if imds is not None and imds != "v2.0":
        raise _invalid("InvalidParameterValue", f"Invalid value '{imds}' for imdsSupport")
    for spec in params.get("TagSpecifications") or []:
        if spec.get("ResourceType") != "image":
            raise _invalid(
                "InvalidParameterValue",
                f"'{spec.get('ResourceType')}' is not a valid taggable resource type for this operation.",
            )

    root = params.get("RootDeviceName")
    bdm: list[dict[str, Any]] = []
    root_snapshot = None
    for mapping in params.get("BlockDeviceMappings") or []:
        ebs = mapping.get("Ebs")
        out: dict[str, Any] = {"DeviceName": mapping.get("DeviceName")}
        if ebs:
            snap_id = ebs.get("SnapshotId")
            snap = backend.snapshots.get(snap_id) if snap_id else None
            if snap_id and snap is None:
                raise _invalid(
                    "InvalidSnapshot.NotFound", f"The snapshot '{snap_id}' does not exist."
                )
            size = ebs.get("VolumeSize")
            if size is None and snap is not None:
                size = snap.volume.size
            if snap is not None and size < snap.volume.size:
                raise _invalid(
                    "InvalidBlockDeviceMapping",
                    f"Volume of size {size}GB is smaller than snapshot '{snap_id}', "
                    f"expect size >= {snap.volume.size}GB",
                )
            out["Ebs"] = {
                "DeleteOnTermination": ebs.get("DeleteOnTermination", True),
                "SnapshotId": snap_id,
                "VolumeSize": size,
                "VolumeType": ebs.get("VolumeType") or "gp2",
                "Encrypted": bool(snap.encrypted) if snap else False,
            }
            for extra in ("Iops", "Throughput"):
                if ebs.get(extra) is not None:
                    out["Ebs"][extra] = ebs[extra]
            if mapping.get("DeviceName") == root:
                root_snapshot = snap
        elif mapping.get("VirtualName"):
            out["VirtualName"] = mapping["VirtualName"]
        bdm.append(out)
    if root is None or root_snapshot is None:
        raise _invalid(
            "InvalidBlockDeviceMapping",
            "The root device name must be given and map to an EBS snapshot",
        )

    from moto.ec2.utils import random_ami_id

    ami_id = random_ami_id()
    ami = RegisteredAmi(backend, ami_id, params, bdm)
    for spec in params.get("TagSpecifications") or []:
        for tag in spec.get("Tags") or []:
            ami.add_tag(tag["Key"], tag["Value"])
    backend.amis[ami_id] = ami
    return ActionResult({"ImageId": ami_id})


# --------------------------------------------------------------------------------------
# CopyImage: a copy that keeps the source's attributes, gets its own snapshot, stays
# `pending` for copy_seconds, then is `available` (or `failed` in copy_fail_regions).


def _copy_slot(target: Any, source: Any) -> float:
    """When a new copy into `target` can start: now, while the snapshot copies in flight
    there leave room for its snapshots; else refused, or queued behind the copy that ends
    first (copy_image_over_limit, seeded: AWS documents CopySnapshot's answer only)."""
    now = time.monotonic()
    def snapshots_of(ami: Any) -> int:
        return sum(1 for m in ami.block_device_mappings if (m.get("Ebs") or {}).get("SnapshotId"))

    snapshots = snapshots_of(source)
    # One entry per snapshot copy still running, by when it ends.
    in_flight = sorted(a.ready_at for a in target.amis.values()
                       if isinstance(a, CopiedAmi) and a.ready_at > now
                       for _ in range(snapshots_of(a)))
    limit = int(SETTINGS["snapshot_copies_per_destination"])
    if len(in_flight) + snapshots <= limit:
        return now
    if SETTINGS["copy_image_over_limit"] == "refused":
        raise _invalid("ResourceLimitExceeded",
                       "Too many snapshot copies in progress. "
                       f"The limit is {limit} for this destination region.")
    # Queued: it starts as the copies ahead of it end.
    return in_flight[len(in_flight) + snapshots - limit - 1]


class CopiedAmi(RegisteredAmi):
    __module__ = "moto.ec2.standin"

    def __init__(self, backend: Any, ami_id: str, params: dict[str, Any], bdm: list[dict],
                 fail: bool, starts_at: float | None = None):
        super().__init__(backend, ami_id, params, bdm)
        self.ready_at = (starts_at or time.monotonic()) + SETTINGS["copy_seconds"]
        schedule_event("copy-ends", ami_id, self.ready_at)
        self.fail = fail
        self.state_reason = None

    @property
    def state(self) -> str:
        if time.monotonic() < getattr(self, "ready_at", 0):
            return "pending"
        if getattr(self, "set_state", None):  # DisableImage, EnableImage: as any AMI
            return self.set_state
        if getattr(self, "fail", False):
            self.state_reason = {"Code": "Client.CopyImageFailed",
                                 "Message": "The copy failed (stand-in: region set to fail)"}
            return "failed"
        return "available"

    @state.setter
    def state(self, value: str) -> None:
        # Ami.__init__ assigns it, and the clock decides until the copy ends; what is set
        # after (DisableImage) holds as for any other AMI.
        if hasattr(self, "ready_at"):
            self.set_state = value


_original_copy_image = EC2Response.copy_image


def _refuse_cross_partition(source_region: str, region: str) -> None:
    """"CopyImage does not support ... Cross-partition copies (use CreateStoreImageTask
    instead)" (CopyImage API reference). moto copies from any Region it serves."""
    if get_partition(source_region) != get_partition(region):
        raise _invalid(
            SETTINGS["copy_cross_partition_code"],
            f"Cannot copy an image from {source_region} ({get_partition(source_region)}) "
            f"to {region} ({get_partition(region)}): copies cannot cross partitions.",
        )


def _launchable_by(ami: Any, account: str) -> bool:
    """Whether `account` may use another account's AMI: it is public, or shared with the
    account ("You can share an AMI with specific AWS accounts ... or make it public":
    EC2 User Guide, "Share an AMI with specific AWS accounts")."""
    return ami.is_public or {"UserId": account} in ami.launch_permissions


def _shared_amis(account: str, region: str) -> list[Any]:
    """The AMIs of other accounts in `region` that `account` may use. moto keeps each
    account's AMIs apart; AWS's DescribeImages lists "public images, private images that
    you own, and private images owned by other AWS accounts for which you have explicit
    launch permissions" (EC2 API Reference, DescribeImages)."""
    from moto.ec2.models import ec2_backends

    return [ami for owner in list(ec2_backends.keys()) if owner != account
            for ami in list(ec2_backends[owner][region].amis.values())
            if ami.owner_id == owner and _launchable_by(ami, account)]


def _deprecated(ami: Any) -> bool:
    """Whether the AMI's deprecation time has passed."""
    at = getattr(ami, "deprecation_time", None)
    if not at:
        return False
    when = datetime.datetime.fromisoformat(str(at).replace("Z", "+00:00"))
    return when <= datetime.datetime.now(datetime.timezone.utc)


def describe_snapshots(self: EC2Response) -> ActionResult:
    """DescribeSnapshots lists "public snapshots, private snapshots that you own, and
    private snapshots owned by other Amazon Web Services accounts for which you have
    explicit create volume permissions"; OwnerIds keeps "only snapshots from the specified
    owners and for which you have access", and RestorableByUserIds those restorable by the
    users named: "self for snapshots for which you own or have explicit permissions, or all
    for public snapshots" (EC2 API Reference, DescribeSnapshots). moto lists the caller's
    own, whatever the request names."""
    from moto.ec2.models import ec2_backends
    from moto.ec2.utils import generic_filter

    backend = self.ec2_backend
    me = backend.account_id
    owners = [me if o == "self" else o for o in self._get_param("OwnerIds", [])]
    restorable = self._get_param("RestorableByUserIds", [])
    ids = self._get_param("SnapshotIds", [])

    def shared_with_me(snap: Any) -> bool:
        return ("all" in snap.create_volume_permission_groups
                or me in snap.create_volume_permission_userids)

    def restorable_by(snap: Any, user: str) -> bool:
        if user == "self":
            return snap.owner_id == me or me in snap.create_volume_permission_userids
        if user == "all":
            return "all" in snap.create_volume_permission_groups
        return user in snap.create_volume_permission_userids

    snapshots = list(backend.snapshots.values()) + [
        snap for owner in list(ec2_backends.keys()) if owner != me
        for snap in list(ec2_backends[owner][backend.region_name].snapshots.values())
        if shared_with_me(snap)]
    if ids:
        snapshots = [s for s in snapshots if s.id in ids]
        if len(snapshots) < len(set(ids)):
            raise _invalid("InvalidSnapshot.NotFound",
                           f"The snapshot '{', '.join(ids)}' does not exist.")
    if owners:
        snapshots = [s for s in snapshots if s.owner_id in owners]
    if restorable:
        snapshots = [s for s in snapshots if any(restorable_by(s, u) for u in restorable)]
    filters = self._filters_from_querystring()
    if filters:
        snapshots = generic_filter(filters, snapshots)
    return ActionResult({"Snapshots": snapshots})


def _source_ami(account: str, source_region: str, image_id: str) -> tuple[Any, Any]:
    """The AMI a CopyImage names, and the backend holding it: the caller's own, else one of
    another account shared with the caller (EC2 User Guide, "Copy an AMI": "You can copy
    an AMI ... that is shared with you")."""
    from moto.ec2.models import ec2_backends

    own = ec2_backends[account][source_region]
    if image_id in own.amis:
        return own.amis[image_id], own
    for ami in _shared_amis(account, source_region):
        if ami.id == image_id:
            return ami, ec2_backends[ami.owner_id][source_region]
    return None, own


def _refuse_unreadable_snapshots(source: Any, backend: Any, account: str) -> None:
    """"To copy an AMI that was shared with you from another account, the owner of the
    source AMI must grant you read permissions for the storage that backs the AMI, which is
    the associated EBS snapshot" (EC2 User Guide, "Copy an AMI"): launch permission alone
    is not enough, even on a public AMI."""
    if backend.account_id == account:
        return
    for mapping in source.block_device_mappings:
        snapshot = backend.snapshots.get((mapping.get("Ebs") or {}).get("SnapshotId") or "")
        if snapshot is None:
            continue
        if "all" in snapshot.create_volume_permission_groups:
            continue
        if account in snapshot.create_volume_permission_userids:
            continue
        raise _invalid(
            SETTINGS["copy_shared_unreadable_code"],
            f"You do not have permission to access the storage of {source.id}: its "
            f"snapshot {snapshot.id} is not shared with account {account}.",
        )


def copy_image(self: EC2Response) -> ActionResult:
    from moto.ec2.utils import random_ami_id

    params = self._get_params()
    self.error_on_dryrun()
    target = self.ec2_backend
    _refuse_cross_partition(params["SourceRegion"], target.region_name)
    source, source_backend = _source_ami(target.account_id, params["SourceRegion"],
                                         params["SourceImageId"])
    if not isinstance(source, RegisteredAmi):
        return _original_copy_image(self)
    _refuse_unreadable_snapshots(source, source_backend, target.account_id)
    tokens = target.__dict__.setdefault("_standin_copy_tokens", {})
    token = params.get("ClientToken")
    if token and token in tokens:
        return ActionResult({"ImageId": tokens[token]})
    name = params.get("Name") or source.name
    for ami in target.amis.values():
        if ami.name == name and ami.owner_id == target.account_id:
            raise _invalid("InvalidAMIName.Duplicate", f"AMI name {name} is already in use by AMI {ami.id}")
    # "The tags to apply to the new AMI and new snapshots. You can tag the AMI, the
    # snapshots, or both" (CopyImage API reference, TagSpecifications); any other resource
    # type fails the request. moto ignores them.
    new_tags: dict[str, dict[str, str]] = {"image": {}, "snapshot": {}}
    for spec in params.get("TagSpecifications") or []:
        kind = spec.get("ResourceType")
        if kind not in new_tags:
            raise _invalid(
                "InvalidParameterValue",
                f"'{kind}' is not a valid taggable resource type for this operation.",
            )
        new_tags[kind].update({t["Key"]: t.get("Value", "") for t in spec.get("Tags") or []})
    ami_id = random_ami_id()
    starts_at = _copy_slot(target, source)
    bdm = []
    for mapping in source.block_device_mappings:
        mapping = json.loads(json.dumps(mapping))
        ebs = mapping.get("Ebs")
        if ebs and ebs.get("SnapshotId"):
            src_snap = source_backend.snapshots[ebs["SnapshotId"]]
            # A copy of an encrypted snapshot is encrypted; with encryption by default on in
            # the target region every copy is ("After you enable encryption by default, ...
            # new EBS volumes and snapshot copies ... are encrypted": EBS User Guide,
            # "Encryption by default"). The key: the request's, else the target's default.
            encrypted = (bool(src_snap.encrypted) or target.ebs_encryption_by_default
                         or str(params.get("Encrypted", "")).lower() == "true")
            key = (params.get("KmsKeyId") or standin_ebs.default_ebs_key(target)) if encrypted else None
            vol = target.create_volume(size=src_snap.volume.size, zone_name=target.region_name + "a",
                                       encrypted=encrypted, kms_key_id=key)
            snap = target.create_snapshot(
                vol.id, f"Copied for DestinationAmi {ami_id} from SourceAmi {source.id} "
                        f"for SourceSnapshot {src_snap.id}")
            target.delete_volume(vol.id)
            snap.kms_key_id = key
            if new_tags["snapshot"]:
                target.create_tags([snap.id], new_tags["snapshot"])
            ebs["SnapshotId"] = snap.id
            ebs["Encrypted"] = encrypted
        bdm.append(mapping)
    register_params = dict(source.register_params)
    register_params.update(Name=name, Description=params.get("Description") or source.description)
    register_params.pop("TagSpecifications", None)
    ami = CopiedAmi(target, ami_id, register_params, bdm,
                    fail=target.region_name in SETTINGS["copy_fail_regions"], starts_at=starts_at)
    if params.get("CopyImageTags"):
        for key, value in source.get_tags().items() if hasattr(source, "get_tags") else []:
            ami.add_tag(key, value)
    if new_tags["image"]:
        target.create_tags([ami_id], new_tags["image"])
    target.amis[ami_id] = ami
    if token:
        tokens[token] = ami_id
    return ActionResult({"ImageId": ami_id})


def get_image_block_public_access_state(self: EC2Response) -> ActionResult:
    self.error_on_dryrun()
    return ActionResult({"ImageBlockPublicAccessState": SETTINGS["image_block_public_access"]})


def get_snapshot_block_public_access_state(self: EC2Response) -> ActionResult:
    self.error_on_dryrun()
    return ActionResult({"State": SETTINGS["snapshot_block_public_access"]})


def enable_image_deprecation(self: EC2Response) -> ActionResult:
    """EnableImageDeprecation (moto has none): DescribeImages then shows DeprecationTime,
    in AWS's form (whole seconds, UTC). The time must be in the future."""
    image_id = self._get_param("ImageId")
    self.error_on_dryrun()
    ami = self.ec2_backend.amis.get(image_id)
    if ami is None:
        raise _invalid("InvalidAMIID.NotFound", f"The image id '[{image_id}]' does not exist")
    raw = self._get_param("DeprecateAt") or ""
    if isinstance(raw, datetime.datetime):  # moto parses the timestamp by the API's shape
        at = raw
    else:
        try:
            at = datetime.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
        except ValueError:
            raise _invalid("InvalidParameterValue", f"Invalid value '{raw}' for DeprecateAt")
    if at.tzinfo is None:
        at = at.replace(tzinfo=datetime.timezone.utc)
    now = datetime.datetime.now(datetime.timezone.utc)
    if at <= now:
        raise _invalid("InvalidParameterValue", "The deprecation time must be in the future")
    # "The upper limit for DeprecateAt is 10 years from now, except for public AMIs, where
    # the upper limit is 2 years from the creation date." (EnableImageDeprecation API
    # reference; the error code is not given: InvalidParameterValue, as for a past date).
    if at > now + datetime.timedelta(days=3652):  # 10 years, leap days included
        raise _invalid("InvalidParameterValue",
                       "The deprecation time can't be more than 10 years from now")
    if ami.is_public:
        created = datetime.datetime.fromisoformat(
            str(ami.creation_date).replace("Z", "+00:00"))
        if created.tzinfo is None:
            created = created.replace(tzinfo=datetime.timezone.utc)
        if at > created + datetime.timedelta(days=731):  # 2 years
            raise _invalid("InvalidParameterValue",
                           "The deprecation time of a public AMI can't be more than 2 years "
                           "after its creation date")
    ami.deprecation_time = at.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return ActionResult({"Return": True})


def disable_image_deprecation(self: EC2Response) -> ActionResult:
    """DisableImageDeprecation (moto has none): "Cancels the deprecation of the specified
    AMI" (EC2 API Reference, DisableImageDeprecation); DescribeImages then shows no
    DeprecationTime. An unknown image is InvalidAMIID.NotFound, as for every image call."""
    image_id = self._get_param("ImageId")
    self.error_on_dryrun()
    ami = self.ec2_backend.amis.get(image_id)
    if ami is None:
        raise _invalid("InvalidAMIID.NotFound", f"The image id '[{image_id}]' does not exist")
    ami.deprecation_time = None
    return ActionResult({"Return": True})


_original_delete_snapshot = EC2Response.delete_snapshot
_original_describe_images = EC2Response.describe_images
_original_describe_image_attribute = EC2Response.describe_image_attribute
_original_deregister_image = EC2Response.deregister_image


def _owned_ami(self: EC2Response, image_id: str) -> Any:
    ami = self.ec2_backend.amis.get(image_id)
    if ami is None:
        raise _invalid("InvalidAMIID.NotFound", f"The image id '[{image_id}]' does not exist")
    return ami


def disable_image(self: EC2Response) -> ActionResult:
    """DisableImage: "Sets the AMI state to disabled and removes all launch permissions
    from the AMI ... If an AMI was public or previously shared, it is made private" (EC2
    API Reference, DisableImage). moto only sets the state."""
    self.error_on_dryrun()
    ami = _owned_ami(self, self._get_param("ImageId"))
    ami.launch_permissions = []
    ami.state = "disabled"
    return ActionResult({"Return": True})


def describe_images(self: EC2Response) -> ActionResult:
    """DescribeImages leaves disabled AMIs out unless IncludeDisabled ("Default: No
    disabled AMIs are included in the response": EC2 API Reference, DescribeImages), and
    lists other accounts' AMIs the caller may use (see _shared_amis)."""
    from moto.ec2.utils import generic_filter

    backend = self.ec2_backend
    ids = self._get_param("ImageIds", [])
    owners = self._get_param("Owners", [])
    # "If you are the AMI owner, all deprecated AMIs appear in the response regardless of
    # what you specify for this parameter" (IncludeDeprecated): others' only when asked, or
    # named ("does not appear in DescribeImages API calls unless you specify its ID": EC2
    # User Guide, "Deprecate an AMI").
    deprecated = self._get_bool_param("IncludeDeprecated", False) or bool(ids)
    shared = [a for a in _shared_amis(backend.account_id, backend.region_name)
              if (not ids or a.id in ids) and (not owners or a.owner_id in owners)
              and (deprecated or not _deprecated(a))]
    filters = self._filters_from_querystring()
    if shared and filters:
        shared = generic_filter(filters, shared)
    try:
        result = _original_describe_images(self)
    except EC2ClientError:
        # An id of another account's shared AMI is not in moto's own backend.
        if not shared or len(shared) < len(ids):
            raise
        result = ActionResult({"Images": []})
    if shared:
        known = {getattr(i, "id", None) for i in result.result["Images"]}
        result = ActionResult({**result.result,
                               "Images": list(result.result["Images"])
                               + [a for a in shared if a.id not in known]})
    if self._get_bool_param("IncludeDisabled", False):
        return result
    images = [i for i in result.result["Images"] if getattr(i, "state", "") != "disabled"]
    return ActionResult({**result.result, "Images": images})


def _protected_until(ami: Any) -> bool:
    """Whether deregistration protection (or its cooldown) is in force now."""
    if getattr(ami, "deregistration_protection", "disabled") != "disabled":
        return True
    return time.time() < getattr(ami, "protection_cooldown_until", 0.0)


def enable_image_deregistration_protection(self: EC2Response) -> ActionResult:
    """EnableImageDeregistrationProtection (moto has none): "WithCooldown: If true, enforces
    deregistration protection for 24 hours after deregistration protection is disabled"
    (EC2 API Reference). Answers and DescribeImages' DeregistrationProtection as the AWS
    CLI's examples show them ("enabled-without-cooldown", "disabled")."""
    self.error_on_dryrun()
    ami = _owned_ami(self, self._get_param("ImageId"))
    cooldown = self._get_bool_param("WithCooldown", False)
    ami.deregistration_protection = "enabled-with-cooldown" if cooldown else "enabled-without-cooldown"
    return ActionResult({"Return": ami.deregistration_protection})


def disable_image_deregistration_protection(self: EC2Response) -> ActionResult:
    """DisableImageDeregistrationProtection: "If you chose to include a 24-hour cooldown
    period when you enabled deregistration protection for the AMI, then, when you disable
    deregistration protection, you won't immediately be able to deregister the AMI" (EC2
    API Reference). The cooldown's own DescribeImages value is undocumented: "disabled"."""
    self.error_on_dryrun()
    ami = _owned_ami(self, self._get_param("ImageId"))
    if getattr(ami, "deregistration_protection", "disabled") == "enabled-with-cooldown":
        ami.protection_cooldown_until = time.time() + 24 * 3600
    ami.deregistration_protection = "disabled"
    return ActionResult({"Return": "disabled"})


def deregister_image(self: EC2Response) -> Any:
    """Refused while deregistration protection (or its cooldown) is on (EC2 User Guide,
    "Protect an AMI from deregistration"); the code is seeded: AWS names none. An AMI a
    Recycle Bin rule matches goes to the bin, restorable until its retention ends ("If a
    deleted resource matches a retention rule, it is retained in the Recycle Bin instead of
    being immediately deleted": Recycle Bin User Guide)."""
    ami = self.ec2_backend.amis.get(self._get_param("ImageId"))
    if ami is not None and _protected_until(ami):
        raise _invalid(SETTINGS["deregister_protected_code"],
                       f"The image {ami.id} has deregistration protection enabled.")
    keep = None
    if ami is not None and not self._get_bool_param("DryRun", False):
        keep = RBIN.retention(self.current_account, self.region, "EC2_IMAGE",
                              _tags_of(self.ec2_backend, ami.id))
    result = _original_deregister_image(self)
    if keep is not None:
        # Unshared in the bin, shared again on restore (Recycle Bin User Guide).
        shared, ami.launch_permissions = list(ami.launch_permissions), []
        RBIN.put(RBIN.images, self.current_account, self.region, ami.id, ami, keep, shared)
    return result


def _tags_of(backend: Any, resource_id: str) -> dict[str, str]:
    return dict(backend.tags[resource_id]) if resource_id in backend.tags else {}


def _mapped_snapshots(ami: Any) -> list[str]:
    return [m["Ebs"]["SnapshotId"] for m in ami.block_device_mappings
            if (m.get("Ebs") or {}).get("SnapshotId")]


def _check_bin_ids(wanted: set[str], held: dict, name: str, not_found: str) -> None:
    """"You can specify up to 20 IDs in a single request" (ListImagesInRecycleBin; its
    snapshot twin states no limit); an id not in the bin is answered as seeded."""
    if name == "ImageId" and len(wanted) > 20:
        raise _invalid("InvalidParameterValue", f"At most 20 {name} values in one request")
    missing = sorted(wanted - set(held))
    if missing and SETTINGS["rbin_list_unknown"] == "not-found":
        raise _invalid(not_found, f"The ID '{missing[0]}' is not in the Recycle Bin")


def list_images_in_recycle_bin(self: EC2Response) -> ActionResult:
    """ListImagesInRecycleBin (EC2 API Reference): the AMIs in the bin, with when each
    entered and when it leaves."""
    self.error_on_dryrun()
    wanted = set(self._get_param("ImageIds", []))
    held = RBIN.held(RBIN.images, self.current_account, self.region)
    _check_bin_ids(wanted, held, "ImageId", "InvalidAMIID.NotFound")
    images = [{"ImageId": rid, "Name": b.obj.name, "Description": b.obj.description,
               "RecycleBinEnterTime": standin_rbin.iso(b.entered),
               "RecycleBinExitTime": standin_rbin.iso(b.leaves)}
              for rid, b in held.items() if not wanted or rid in wanted]
    return ActionResult({"Images": images})


def list_snapshots_in_recycle_bin(self: EC2Response) -> ActionResult:
    """ListSnapshotsInRecycleBin (EC2 API Reference)."""
    self.error_on_dryrun()
    wanted = set(self._get_param("SnapshotIds", []))
    held = RBIN.held(RBIN.snapshots, self.current_account, self.region)
    _check_bin_ids(wanted, held, "SnapshotId", "InvalidSnapshot.NotFound")
    snapshots = [{"SnapshotId": rid, "Description": b.obj.description,
                  "VolumeId": b.obj.volume.id,
                  "RecycleBinEnterTime": standin_rbin.iso(b.entered),
                  "RecycleBinExitTime": standin_rbin.iso(b.leaves)}
                 for rid, b in held.items() if not wanted or rid in wanted]
    return ActionResult({"Snapshots": snapshots})


def restore_snapshot_from_recycle_bin(self: EC2Response) -> ActionResult:
    """RestoreSnapshotFromRecycleBin: the snapshot is back as it was (EC2 API Reference)."""
    self.error_on_dryrun()
    snapshot_id = self._get_param("SnapshotId")
    binned = RBIN.take(RBIN.snapshots, self.current_account, self.region, snapshot_id)
    if binned is None:
        raise _invalid("InvalidSnapshot.NotFound",
                       f"The snapshot '{snapshot_id}' does not exist in the Recycle Bin.")
    snap = binned.obj
    self.ec2_backend.snapshots[snapshot_id] = snap
    return ActionResult({
        "SnapshotId": snapshot_id, "Description": snap.description,
        "Encrypted": bool(snap.encrypted), "OwnerId": snap.owner_id, "Progress": "100%",
        "StartTime": snap.start_time, "State": snap.status, "VolumeId": snap.volume.id,
        "VolumeSize": snap.volume.size})


def restore_image_from_recycle_bin(self: EC2Response) -> ActionResult:
    """RestoreImageFromRecycleBin (EC2 API Reference). "You can't restore an AMI from the
    Recycle Bin if its associated snapshots are in the Recycle Bin. You must first restore
    the snapshots" (Recycle Bin User Guide, "Restore deleted AMIs from the Recycle Bin")."""
    self.error_on_dryrun()
    image_id = self._get_param("ImageId")
    held = RBIN.held(RBIN.images, self.current_account, self.region)
    binned = held.get(image_id)
    if binned is None:
        raise _invalid("InvalidAMIID.NotFound",
                       f"The image id '[{image_id}]' does not exist in the Recycle Bin")
    in_bin = RBIN.held(RBIN.snapshots, self.current_account, self.region)
    mapped = _mapped_snapshots(binned.obj)
    waiting = [s for s in mapped if s in in_bin]
    if waiting:
        raise _invalid(SETTINGS["rbin_restore_refused_code"],
                       f"Restore the image's snapshots first: {', '.join(waiting)} "
                       "are in the Recycle Bin")
    gone = [s for s in mapped if s not in self.ec2_backend.snapshots]
    if gone:
        raise _invalid(SETTINGS["rbin_restore_refused_code"],
                       f"The image's snapshots {', '.join(gone)} are deleted: it cannot be "
                       "restored")
    RBIN.take(RBIN.images, self.current_account, self.region, image_id)
    ami = binned.obj
    ami.launch_permissions = binned.shared
    if getattr(ami, "state", "") == "disabled" and SETTINGS["rbin_restored_disabled"] == "available":
        ami.state = "available"
    self.ec2_backend.amis[image_id] = ami
    if image_id in self.ec2_backend.deleted_amis:
        self.ec2_backend.deleted_amis.remove(image_id)
    return ActionResult({"Return": True})


# --------------------------------------------------------------------------------------
# AMI usage reports (moto has none): CreateImageUsageReport, DescribeImageUsageReports,
# DescribeImageUsageReportEntries (EC2 API Reference; EC2 User Guide, "View your AMI
# usage"). A report is pending for usage_report_seconds, then available with the entries
# the AMI's usage (a control) gives, or error; it is deleted 30 days after it was made.

USAGE_REPORTS: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
USAGE_REPORT_TYPES = ("ec2:Instance", "ec2:LaunchTemplate", "imagebuilder:ImageRecipe",
                      "imagebuilder:ContainerRecipe")
# "Amazon EC2 automatically deletes a report 30 days after creation."
USAGE_REPORT_LIFE = datetime.timedelta(days=30)


def _find_usage_report(report_id: str) -> dict[str, Any] | None:
    for reports in USAGE_REPORTS.values():
        if report_id in reports:
            return reports[report_id]
    return None


def _usage_reports(account: str, region: str) -> dict[str, dict[str, Any]]:
    """The region's reports as they are now: a pending one turns available (or error) when
    its time comes; one made 30 days ago is gone."""
    now = datetime.datetime.now(datetime.timezone.utc)
    reports = USAGE_REPORTS.setdefault((account, region), {})
    for rid in [r for r, rep in reports.items() if rep["CreationTime"] + USAGE_REPORT_LIFE <= now]:
        del reports[rid]
    for rep in reports.values():
        if rep["State"] == "pending" and time.time() >= rep["ready_at"]:
            if rep["ImageId"] in SETTINGS["usage_report_errors"]:
                rep["State"], rep["StateReason"] = "error", "The report could not be created."
            else:
                rep["State"] = "available"
    return reports


def create_image_usage_report(self: EC2Response) -> ActionResult:
    """CreateImageUsageReport: ImageId and ResourceType.N required, ResourceType one of
    ec2:Instance | ec2:LaunchTemplate (and Image Builder's recipes), AccountId.N up to 200
    ("To include all accounts, omit this parameter"); one pending report per AMI (EC2 API
    Reference; EC2 User Guide, "View your AMI usage", Report quotas)."""
    self.error_on_dryrun()
    ami = _owned_ami(self, self._get_param("ImageId"))
    types = [t.get("ResourceType") for t in self._get_param("ResourceTypes", [])]
    if not types or any(t not in USAGE_REPORT_TYPES for t in types):
        raise _invalid("InvalidParameterValue",
                       f"ResourceType must be one of {', '.join(USAGE_REPORT_TYPES)}")
    accounts = self._get_param("AccountIds", [])
    if len(accounts) > 200:
        raise _invalid("InvalidParameterValue", "At most 200 AccountId values")
    reports = _usage_reports(self.current_account, self.region)
    if any(r["ImageId"] == ami.id and r["State"] == "pending" for r in reports.values()):
        raise _invalid(SETTINGS["usage_report_pending_code"],
                       f"An AMI usage report for {ami.id} is already in progress.")
    from moto.ec2.utils import random_id

    rid = random_id(prefix="amiur")
    now = datetime.datetime.now(datetime.timezone.utc)
    owner = self.current_account
    entries = []
    by_account: dict[str, dict[str, int]] = {a: {} for a in accounts}
    for use in getattr(ami, "usage", []):
        if use["resource_type"] in types and (not accounts or use["account_id"] in accounts):
            counts = by_account.setdefault(use["account_id"], {})
            counts[use["resource_type"]] = counts.get(use["resource_type"], 0) + int(use["count"])
    for account_id, counts in sorted(by_account.items()):
        if account_id == owner and SETTINGS["usage_report_owner"] == "omitted":
            continue
        for kind in types:
            count = counts.get(kind, 0)
            if count == 0 and SETTINGS["usage_report_zero"] == "omitted":
                continue
            entries.append({"ResourceType": kind, "ReportId": rid, "UsageCount": count,
                            "AccountId": account_id, "ImageId": ami.id})
    reports[rid] = {
        "ImageId": ami.id, "ReportId": rid,
        "ResourceTypes": [{"ResourceType": t} for t in types],
        "AccountIds": accounts, "State": "pending", "CreationTime": now,
        "ready_at": time.time() + float(SETTINGS["usage_report_seconds"]),
        "entries": entries,
    }
    return ActionResult({"ReportId": rid})


def _wanted_reports(self: EC2Response) -> list[dict[str, Any]]:
    images = set(self._get_param("ImageIds", []))
    ids = set(self._get_param("ReportIds", []))
    reports = _usage_reports(self.current_account, self.region).values()
    return [r for r in reports if (not images or r["ImageId"] in images)
            and (not ids or r["ReportId"] in ids)]


def describe_image_usage_reports(self: EC2Response) -> ActionResult:
    """DescribeImageUsageReports (EC2 API Reference): by ImageId.N or ReportId.N, with the
    filter state; ExpirationTime is 30 days after CreationTime."""
    self.error_on_dryrun()
    reports = _wanted_reports(self)
    for name, values in self._filters_from_querystring().items():
        if name == "state":
            reports = [r for r in reports if r["State"] in values]
    shown = []
    for r in reports:
        doc = {k: r[k] for k in ("ImageId", "ReportId", "ResourceTypes", "AccountIds", "State")}
        doc["CreationTime"] = standin_rbin.iso(r["CreationTime"])
        doc["ExpirationTime"] = standin_rbin.iso(r["CreationTime"] + USAGE_REPORT_LIFE)
        if r.get("StateReason"):
            doc["StateReason"] = r["StateReason"]
        shown.append(doc)
    return ActionResult({"ImageUsageReports": shown})


def describe_image_usage_report_entries(self: EC2Response) -> ActionResult:
    """DescribeImageUsageReportEntries: "This information is only available when the report
    is in the ... available (AWS CLI) state" (EC2 User Guide, "View your AMI usage")."""
    self.error_on_dryrun()
    entries = []
    for r in _wanted_reports(self):
        if r["State"] != "available":
            continue
        for e in r["entries"]:
            entries.append({**e, "ReportCreationTime": standin_rbin.iso(r["CreationTime"])})
    return ActionResult({"ImageUsageReportEntries": entries})


_original_run_instances = EC2Response.run_instances


def run_instances(self: EC2Response) -> Any:
    """A disabled AMI launches nothing ("When an AMI is disabled ... you can't launch new
    instances from it": EC2 User Guide, "Disable an Amazon EC2 AMI"); moto launches it."""
    ami = self.ec2_backend.amis.get(self._get_param("ImageId"))
    if ami is not None and getattr(ami, "state", "") == "disabled":
        raise _invalid(SETTINGS["run_disabled_code"], f"The image {ami.id} is disabled.")
    return _original_run_instances(self)


def describe_image_attribute(self: EC2Response) -> Any:
    """lastLaunchedTime ("the date and time, in ISO 8601 date-time format, when the AMI was
    last used to launch an EC2 instance"; EC2 API Reference, DescribeImageAttribute and
    ImageAttribute) and deregistrationProtection, which moto cannot answer. The launch
    time is set through the control API: AWS reports a launch up to 24 hours late."""
    attribute = self._get_param("Attribute")
    if attribute not in ("lastLaunchedTime", "deregistrationProtection"):
        return _original_describe_image_attribute(self)
    self.error_on_dryrun()
    ami = _owned_ami(self, self._get_param("ImageId"))
    if attribute == "deregistrationProtection":
        value = getattr(ami, "deregistration_protection", "disabled")
        return ActionResult({"ImageId": ami.id, "DeregistrationProtection": {"Value": value}})
    launched = getattr(ami, "last_launched_time", None)
    body: dict[str, Any] = {"ImageId": ami.id}
    if launched:
        body["LastLaunchedTime"] = {"Value": launched}
    return ActionResult(body)


def describe_regions(self: EC2Response) -> ActionResult:
    """DescribeRegions as the EC2 API Reference documents it: without AllRegions only the
    Regions enabled for the account ("AllRegions: Indicates whether to display all Regions,
    including Regions that are disabled for your account"), and the filters endpoint,
    opt-in-status and region-name. moto lists every Region and ignores both."""
    self.error_on_dryrun()
    regions = self.ec2_backend.describe_regions(self._get_param("RegionNames", []))
    # An account is in one partition, and so are the Regions it can use: "Every Region is
    # in exactly one partition ... You cannot use IAM credentials from one partition to
    # interact with resources in a different partition" (AWS Fault Isolation Boundaries,
    # "Partitions"). moto lists every partition's Regions in each.
    here = get_partition(self.region)
    regions = [r for r in regions if get_partition(r.name) == here]
    # Opt-in Regions the account enabled (Account Management's EnableRegion; a setting
    # here) answer "opted-in" (DescribeRegions API reference, Region.OptInStatus:
    # "opt-in-not-required | opted-in | not-opted-in"). moto never says opted-in.
    opted_in = set(SETTINGS["opted_in_regions"])
    for region in regions:
        if region.name in opted_in and region.opt_in_status == "not-opted-in":
            region.opt_in_status = "opted-in"
        elif region.opt_in_status == "opted-in" and region.name not in opted_in:
            region.opt_in_status = "not-opted-in"
    if not self._get_bool_param("AllRegions", False):
        regions = [r for r in regions if r.opt_in_status != "not-opted-in"]
    attributes = {"endpoint": "endpoint", "opt-in-status": "opt_in_status", "region-name": "name"}
    for name, values in self._filters_from_querystring().items():
        if name in attributes:
            regions = [r for r in regions if getattr(r, attributes[name]) in values]
    return ActionResult({"Regions": regions})


def delete_snapshot(self: EC2Response) -> Any:
    """"You cannot delete a snapshot of the root device of an EBS volume used by a registered
    AMI. You must first deregister the AMI before you can delete the snapshot." (DeleteSnapshot
    API reference). moto knows only its own AMIs' snapshots; ours point at snapshots they
    were registered from. The code is not in AWS's list: InvalidSnapshot.InUse, as moto."""
    snapshot_id = self._get_param("SnapshotId")
    for ami in self.ec2_backend.amis.values():
        if not isinstance(ami, RegisteredAmi):
            continue
        root = next((m for m in ami.block_device_mappings
                     if m.get("DeviceName") == ami.register_params.get("RootDeviceName")), None)
        if root and (root.get("Ebs") or {}).get("SnapshotId") == snapshot_id:
            raise _invalid("InvalidSnapshot.InUse",
                           f"The snapshot {snapshot_id} is currently in use by {ami.id}")
    snap = self.ec2_backend.snapshots.get(snapshot_id)
    keep = None
    if snap is not None and not self._get_bool_param("DryRun", False):
        # Into the Recycle Bin when a rule matches it (Recycle Bin User Guide).
        keep = RBIN.retention(self.current_account, self.region, "EBS_SNAPSHOT",
                              _tags_of(self.ec2_backend, snapshot_id))
    result = _original_delete_snapshot(self)
    if keep is not None:
        RBIN.put(RBIN.snapshots, self.current_account, self.region, snapshot_id, snap, keep)
    return result


_original_modify_image_attribute = EC2Response.modify_image_attribute
_original_get_service_quota = ServiceQuotasBackend.get_service_quota


# Service Quotas: "Public AMIs", service code ec2 (Service Quotas console, Amazon EC2;
# EC2 User Guide, "Make your AMI available for use in other AWS accounts": "You can have a
# maximum of 5 public AMIs per Region"). The one quota imgpub reads.
PUBLIC_AMI_QUOTA_CODE = "L-0E3CBAB9"
RAISED_PUBLIC_AMI_QUOTA = 1000


def public_ami_quota(region: str) -> int:
    quota = SETTINGS["public_ami_quota"]
    if isinstance(quota, dict):
        quota = quota.get(region)
    return RAISED_PUBLIC_AMI_QUOTA if quota is None else int(quota)


def get_service_quota(self: Any, service_code: str, quota_code: str) -> dict[str, Any]:
    """GetServiceQuota for the public-AMI quota, as AWS answers it (Service Quotas API
    reference, GetServiceQuota and ServiceQuota): moto knows only vpc's quotas."""
    if service_code == "ec2" and quota_code == PUBLIC_AMI_QUOTA_CODE:
        region = self.region_name
        return {
            "ServiceCode": "ec2", "ServiceName": "Amazon Elastic Compute Cloud (Amazon EC2)",
            "QuotaArn": f"arn:{get_partition(region)}:servicequotas:{region}:"
                        f"{self.account_id}:ec2/{PUBLIC_AMI_QUOTA_CODE}",
            "QuotaCode": PUBLIC_AMI_QUOTA_CODE, "QuotaName": "Public AMIs",
            "Value": float(public_ami_quota(region)), "Unit": "None",
            "Adjustable": True, "GlobalQuota": False,
        }
    return _original_get_service_quota(self, service_code, quota_code)


def modify_image_attribute(self: EC2Response) -> Any:
    """As AWS with block public access for AMIs on: launch permission `all` is refused."""
    adds = (self._get_param("LaunchPermission") or {}).get("Add") or []
    public = any(p.get("Group") == "all" for p in adds) or (
        self._get_param("OperationType") == "add" and "all" in (self._get_param("UserGroups") or [])
    )
    if public and SETTINGS["image_block_public_access"] != "unblocked":
        raise _invalid("OperationNotPermitted",
                       "Block public access for AMIs is enabled in this region.")
    quota = public_ami_quota(self.ec2_backend.region_name)
    image = self.ec2_backend.amis.get(self._get_param("ImageId"))
    if public and image is not None and not image.is_public:
        owned = [a for a in self.ec2_backend.amis.values()
                 if a.owner_id == self.ec2_backend.account_id and a.is_public]
        # "The maximum number of public AMIs, including public AMIs in the Recycle Bin"
        # (EC2 User Guide, AMI quotas).
        binned = [b for b in RBIN.held(RBIN.images, self.current_account, self.region).values()
                  if any(p.get("Group") == "all" for p in b.shared)]
        if len(owned) + len(binned) >= quota:
            raise _invalid("ResourceLimitExceeded",
                           f"You have reached your quota of {quota} public AMIs in this Region.")
    return _original_modify_image_attribute(self)


def modify_snapshot_attribute(self: EC2Response) -> EmptyResult:
    """Both forms AWS accepts: the flat one moto knows, and the structured
    CreateVolumePermission.{Add,Remove}.N.{UserId,Group} that the SDKs send. As AWS: an
    encrypted snapshot cannot be made public, nor one under the default EBS key shared."""
    snapshot_id = self._get_param("SnapshotId")
    self.error_on_dryrun()
    changes: list[tuple[str, list[str], list[str]]] = []
    operation = self._get_param("OperationType")
    if operation in ("add", "remove"):
        changes.append(
            (operation, self._get_param("UserIds", []), self._get_param("GroupNames", []))
        )
    structured = self._get_param("CreateVolumePermission") or {}
    for operation, key in (("add", "Add"), ("remove", "Remove")):
        entries = structured.get(key) or []
        users = [e["UserId"] for e in entries if e.get("UserId")]
        groups = [e["Group"] for e in entries if e.get("Group")]
        if users or groups:
            changes.append((operation, users, groups))
    snapshot = self.ec2_backend.snapshots.get(snapshot_id)
    for operation, users, groups in changes:
        if operation == "add" and groups and SETTINGS["snapshot_block_public_access"] != "unblocked":
            raise _invalid("OperationNotPermitted",
                           "Block public access for snapshots is enabled in this region.")
        if operation == "add" and snapshot is not None and snapshot.encrypted:
            if groups:
                raise _invalid("InvalidParameter", "Encrypted snapshots cannot be made public.")
            if getattr(snapshot, "kms_key_id", None) == self.ec2_backend.default_kms_key_id:
                raise _invalid(
                    "InvalidParameter",
                    "Snapshots encrypted with the AWS managed key cannot be shared.",
                )
        if operation == "add":
            self.ec2_backend.add_create_volume_permission(snapshot_id, user_ids=users, groups=groups)
        else:
            self.ec2_backend.remove_create_volume_permission(
                snapshot_id, user_ids=users, groups=groups
            )
    return EmptyResult()


# --------------------------------------------------------------------------------------
# STS AssumeRole: honour the trust policy's external-id condition.

_original_assume_role = STSBackend.assume_role


def _required_external_ids(policy_doc: str) -> set[str] | None:
    try:
        doc = json.loads(policy_doc)
    except (TypeError, ValueError):
        return None
    statements = doc.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    wanted: set[str] = set()
    for st in statements:
        for op, conds in (st.get("Condition") or {}).items():
            if not op.startswith("StringEquals"):
                continue
            for key, value in conds.items():
                if key.lower() == "sts:externalid":
                    wanted |= set(value if isinstance(value, list) else [value])
    return wanted or None


def assume_role(self: STSBackend, **kwargs: Any) -> Any:
    role_arn = kwargs.get("role_arn", "")
    match = re.match(r"arn:[^:]+:iam::(\d+):role/", role_arn)
    if match:
        iam = iam_backends[match.group(1)][self.partition]
        role = next((r for r in iam.get_roles() if r.arn == role_arn), None)
        if role is not None:
            wanted = _required_external_ids(role.assume_role_policy_document)
            if wanted and kwargs.get("external_id") not in wanted:
                raise STSClientError(
                    "AccessDenied",
                    f"User is not authorized to perform: sts:AssumeRole on resource: {role_arn}",
                )
    if SETTINGS["sts_session_seconds"] is not None:
        kwargs["duration"] = int(SETTINGS["sts_session_seconds"])
    return _original_assume_role(self, **kwargs)


def read_body(environ: dict) -> bytes:
    """The request's body, read once and put back for whoever reads it next (moto)."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def expired_session(environ: dict) -> Fault | None:
    """A request signed with an assumed role's credentials after they expired. AssumeRole's
    credentials last DurationSeconds (STS API reference: 900 s up to the role's maximum,
    default 3600); after that: "ExpiredTokenException — The security token included in the
    request is expired. HTTP status code: 403" (AWS common errors); which code a service
    answers the seed picks. moto accepts them forever."""
    from moto.core.utils import utcnow
    from moto.sts.models import sts_backends

    m = re.search(r"Credential=(ASIA[^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
    if not m:
        return None
    for account in list(sts_backends.keys()):
        for backend in sts_backends[account].values():
            for role in backend.assumed_roles:
                if role.access_key_id == m.group(1) and role.expiration < utcnow():
                    code = SETTINGS["expired_token_code"]
                    return Fault({"status": 403 if code.endswith("Exception") else 400,
                                  "code": code,
                                  "message": "The security token included in the request is "
                                             "expired"})
    return None


def foreign_partition_key(environ: dict, region: str) -> Fault | None:
    """Credentials of one partition used in another: "Partitions have independent instances
    of AWS Identity and Access Management (IAM) ... You cannot use IAM credentials from one
    partition to interact with resources in a different partition" (AWS Fault Isolation
    Boundaries, "Partitions"). moto files every key, a user's or an assumed role's, under
    the partition it was made in (a role's: where AssumeRole was called) and accepts it in
    all. A key filed nowhere (the stand-in's default keys, the default account's) is the
    commercial partition's, as that account is."""
    from moto.iam.models import iam_backends

    m = re.search(r"Credential=([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
    if not m or not region:
        return None
    homes = {partition
             for account in list(iam_backends.keys())
             for partition in PARTITION_NAMES
             if m.group(1) in iam_backends[account][partition].access_keys} or {"aws"}
    if get_partition(region) in homes:
        return None
    return Fault({"status": 403, "code": SETTINGS["foreign_key_code"],
                  "message": "The security token included in the request is invalid."})


# --------------------------------------------------------------------------------------
# Signature checks (when auth is enforced) over the bytes the client sent.
#
# For form-encoded requests (IAM, STS, EC2) moto re-encodes the parsed form with
# botocore's quoting before it checks the SigV4 signature; a client that escapes a
# character differently (the Rust SDK leaves "*" as is) then fails with
# SignatureDoesNotMatch although AWS would accept it. The WSGI layer keeps the raw body
# of the request this thread is serving, and the check uses it.

_request_local = threading.local()
_original_create_aws_request = IAMRequestBase._create_aws_request


def _create_aws_request(self: IAMRequestBase) -> Any:
    request = _original_create_aws_request(self)
    raw = getattr(_request_local, "form_body", None)
    if raw is not None:
        request.data = raw
    return request


def install_patches() -> None:
    IAMRequestBase._create_aws_request = _create_aws_request
    EC2Response.import_snapshot = import_snapshot
    EC2Response.describe_import_snapshot_tasks = describe_import_snapshot_tasks
    EC2Response.register_image = register_image
    EC2Response.copy_image = copy_image
    EC2Response.modify_snapshot_attribute = modify_snapshot_attribute
    EC2Response.enable_image_deprecation = enable_image_deprecation
    EC2Response.disable_image_deprecation = disable_image_deprecation
    EC2Response.get_image_block_public_access_state = get_image_block_public_access_state
    EC2Response.get_snapshot_block_public_access_state = get_snapshot_block_public_access_state
    EC2Response.modify_image_attribute = modify_image_attribute
    EC2Response.delete_snapshot = delete_snapshot
    EC2Response.describe_regions = describe_regions
    EC2Response.disable_image = disable_image
    EC2Response.describe_images = describe_images
    EC2Response.describe_snapshots = describe_snapshots
    EC2Response.enable_image_deregistration_protection = enable_image_deregistration_protection
    EC2Response.disable_image_deregistration_protection = disable_image_deregistration_protection
    EC2Response.deregister_image = deregister_image
    EC2Response.describe_image_attribute = describe_image_attribute
    EC2Response.list_images_in_recycle_bin = list_images_in_recycle_bin
    EC2Response.list_snapshots_in_recycle_bin = list_snapshots_in_recycle_bin
    EC2Response.restore_image_from_recycle_bin = restore_image_from_recycle_bin
    EC2Response.restore_snapshot_from_recycle_bin = restore_snapshot_from_recycle_bin
    EC2Response.run_instances = run_instances
    EC2Response.create_image_usage_report = create_image_usage_report
    EC2Response.describe_image_usage_reports = describe_image_usage_reports
    EC2Response.describe_image_usage_report_entries = describe_image_usage_report_entries
    ServiceQuotasBackend.get_service_quota = get_service_quota
    STSBackend.assume_role = assume_role
    _patch_user_boundaries()


def _patch_user_boundaries() -> None:
    """A user's permissions boundary: CreateUser and PutUserPermissionsBoundary set it,
    GetUser returns it as User.PermissionsBoundary (IAM API reference), and it limits what
    the user may do (IAM User Guide, "Permissions boundaries for IAM entities"; identities
    below read it through _boundary). moto 5.2 drops CreateUser's and has no
    PutUserPermissionsBoundary (HTTP 500)."""
    from moto.core.responses import EmptyResult
    from moto.core.serialize import return_if_not_empty
    from moto.iam.models import User
    from moto.iam.responses import IamResponse

    User.permissions_boundary_arn = None
    User.permissions_boundary = property(
        lambda self: {"PermissionsBoundaryType": "PermissionsBoundaryPolicy",
                      "PermissionsBoundaryArn": self.permissions_boundary_arn}
        if self.permissions_boundary_arn else None)
    create_user = IamResponse.create_user

    def create_user_with_boundary(self: Any) -> Any:
        result = create_user(self)
        arn = self._get_param("PermissionsBoundary")
        if arn:
            self.backend.get_user(self._get_param("UserName")).permissions_boundary_arn = arn
        return result

    def put_user_permissions_boundary(self: Any) -> Any:
        user = self.backend.get_user(self._get_param("UserName"))
        user.permissions_boundary_arn = self._get_param("PermissionsBoundary")
        return EmptyResult()

    IamResponse.create_user = create_user_with_boundary
    IamResponse.put_user_permissions_boundary = put_user_permissions_boundary
    IamResponse.RESPONSE_KEY_PATH_TO_TRANSFORMER[
        "GetUserResponse.User.PermissionsBoundary"] = return_if_not_empty


# --------------------------------------------------------------------------------------
# IAM: requests signed with the keys of a created user (or of a session of an assumed
# role) are allowed or denied by that identity's policies, as AWS would: every IAM action
# the request needs, against the real resource ARNs, with the request's context keys
# (aws:RequestedRegion, ec2:CreateAction, ec2:Add/*). The decisions come from a maintained
# evaluator, @cloud-copilot/iam-simulate (iam-eval/evaluate.mjs, run with node), which
# handles every condition operator, wildcards and explicit denies; moto's own enforcement
# treats every EC2/SSM resource as * and evaluates only StringEquals. Keys no identity owns
# (the tests' admin key) are not checked. SimulatePrincipalPolicy answers from the same
# evaluator. Off until POST /_standin/config {"enforce_iam": true}.

import subprocess  # noqa: E402

from moto.iam.access_control import (  # noqa: E402
    AssumedRoleAccessKey,
    CreateAccessKeyFailure,
    IAMUserAccessKey,
)
from moto.iam.models import Policy as ManagedPolicy  # noqa: E402


class EvaluatorError(Exception):
    pass


class Evaluator:
    """One long-lived `node evaluate.mjs`; a request and its answer are one line each."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None

    def decide(self, request: dict[str, Any]) -> str:
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                script = os.environ.get("STANDIN_IAM_EVAL") or os.path.join(
                    sys.prefix, "iam-eval", "evaluate.mjs"
                )
                self.proc = subprocess.Popen(
                    ["node", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    text=True, bufsize=1,
                )
            assert self.proc.stdin and self.proc.stdout
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            answer = json.loads(self.proc.stdout.readline() or '{"error": "evaluator died"}')
        if "error" in answer:
            raise EvaluatorError(answer["error"])
        return answer["decision"]


EVALUATOR = Evaluator()


def _document(policy: Any) -> dict:
    """A policy document from what moto stores: a managed policy, an inline JSON string, or
    a user's or group's inline {"policy_document": ...}."""
    if isinstance(policy, ManagedPolicy):
        version = next(v for v in policy.versions if v.is_default)
        policy = version.document
    if isinstance(policy, dict) and "policy_document" in policy:
        policy = policy["policy_document"]
    if isinstance(policy, str):
        return json.loads(policy)
    return policy


class Identity:
    """A principal whose requests are checked: its ARN and its policy documents."""

    def __init__(self, arn: str, account: str, policies: list[dict], boundaries: list[dict]):
        self.arn = arn
        self.account = account
        self.policies = policies
        self.boundaries = boundaries

    def decide(self, action: str, resource: str, context: dict[str, Any]) -> str:
        request = {
            "principal": self.arn,
            "account": self.account,
            "action": action,
            "resource": resource,
            "context": context,
            "identityPolicies": self.policies,
            "boundaries": self.boundaries,
        }
        key_policy = _key_policy(resource)
        if key_policy is not None:
            # "Every KMS key must have exactly one key policy"; IAM policies count only where
            # it lets them (KMS Developer Guide, "Key policies in AWS KMS"): the evaluator
            # weighs both.
            request["resourcePolicy"] = key_policy
        return EVALUATOR.decide(request)


def _key_policy(resource: str) -> dict | None:
    """The key policy of a KMS key ARN (moto's default: the account's root may use it, so
    IAM policies decide), or None for any other resource."""
    m = re.fullmatch(r"arn:[^:]+:kms:([^:]+):(\d{12}):key/(.+)", resource)
    if not m:
        return None
    from moto.kms import kms_backends

    try:
        return json.loads(kms_backends[m.group(2)][m.group(1)].describe_key(m.group(3)).policy)
    except Exception:  # noqa: BLE001 - an unknown key has no policy: nothing allows it
        return None


def _boundary(backend: Any, holder: Any) -> list[dict]:
    arn = getattr(holder, "permissions_boundary_arn", None)
    if not arn:
        return []
    return [_document(backend.get_policy(arn))]


def identity_of_user(backend: Any, account: str, name: str) -> Identity:
    user = backend.get_user(name)
    docs = [_document(backend.get_user_policy(name, p)) for p in backend.list_user_policies(name)]
    attached, _ = backend.list_attached_user_policies(name)
    docs += [_document(p) for p in attached]
    for group in backend.get_groups_for_user(name):
        for p in backend.list_group_policies(group.name):
            docs.append(_document(backend.get_group_policy(group.name, p)))
        attached, _ = backend.list_attached_group_policies(group.name)
        docs += [_document(p) for p in attached]
    return Identity(user.arn, account, docs, _boundary(backend, user))


def identity_of_role(backend: Any, account: str, name: str, session_arn: str | None) -> Identity:
    role = backend.get_role(name)
    docs = []
    for p in backend.list_role_policies(name):
        _, doc = backend.get_role_policy(name, p)
        docs.append(_document(doc))
    attached, _ = backend.list_attached_role_policies(name)
    docs += [_document(p) for p in attached]
    return Identity(session_arn or role.arn, account, docs, _boundary(backend, role))


def identity_for_key(access_key: str, headers: dict[str, str], region: str) -> Identity | None:
    """The user or role session that owns `access_key`, or None for a key nobody owns."""
    from moto.iam.models import iam_backends

    partition = get_partition(region or "us-east-1")
    for account in list(iam_backends.keys()):
        backend = iam_backends[account][partition]
        try:
            if access_key.startswith("AKIA") or "X-Amz-Security-Token" not in headers:
                key = IAMUserAccessKey(account, partition, access_key, headers)
                return identity_of_user(backend, account, key._owner_user_name)
            key = AssumedRoleAccessKey(account, partition, access_key, headers)
            return identity_of_role(backend, account, key._owner_role_name, key.arn)
        except CreateAccessKeyFailure:
            continue
    return None


def identity_for_arn(arn: str) -> Identity | None:
    """SimulatePrincipalPolicy's PolicySourceArn: a user or a role."""
    from moto.iam.models import iam_backends

    m = re.match(r"arn:([^:]+):iam::(\d+):(user|role)/(?:.*/)?([^/]+)$", arn)
    if not m:
        return None
    partition, account, kind, name = m.groups()
    backend = iam_backends[account][partition]
    try:
        if kind == "user":
            return identity_of_user(backend, account, name)
        return identity_of_role(backend, account, name, None)
    except Exception:  # noqa: BLE001 - moto's NotFound types differ per entity
        return None


def _form_list(form: dict[str, list[str]], prefix: str) -> list[str]:
    """Values of an AWS query-protocol list: Prefix.1, Prefix.2, ... in order."""
    items = []
    for key, values in form.items():
        m = re.fullmatch(re.escape(prefix) + r"\.(\d+)", key)
        if m:
            items.append((int(m.group(1)), values[0]))
    return [v for _, v in sorted(items)]


def _resource_tags(account: str, region: str, resource_id: str) -> dict[str, Any]:
    """aws:ResourceTag/KEY for each tag an existing image or snapshot has (Service
    Authorization Reference, Amazon EC2 and Amazon EBS: the actions on an existing image or
    snapshot take aws:ResourceTag)."""
    from moto.ec2.models import ec2_backends

    tags = ec2_backends[account][region].tags
    have = tags[resource_id] if resource_id in tags else {}
    return {f"aws:ResourceTag/{k}": v for k, v in have.items()}


def _request_tags(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """aws:RequestTag/KEY and aws:TagKeys for the tags a request puts on (Service
    Authorization Reference: on the creating actions and CreateTags)."""
    if not pairs:
        return {}
    ctx: dict[str, Any] = {f"aws:RequestTag/{k}": v for k, v in pairs}
    ctx["aws:TagKeys"] = [k for k, _ in pairs]
    return ctx


def _tag_pairs(form: dict[str, list[str]], prefix: str) -> list[tuple[str, str]]:
    """The (key, value) pairs of a query-protocol tag list: PREFIX.1.Key, PREFIX.1.Value, …"""
    pairs = []
    i = 1
    while f"{prefix}.{i}.Key" in form:
        pairs.append((form[f"{prefix}.{i}.Key"][0], (form.get(f"{prefix}.{i}.Value") or [""])[0]))
        i += 1
    return pairs


def _tag_specification(form: dict[str, list[str]], resource_type: str) -> list[tuple[str, str]]:
    """The tags of the TagSpecification.N for `resource_type`."""
    pairs = []
    for key, values in form.items():
        m = re.fullmatch(r"TagSpecification\.(\d+)\.ResourceType", key)
        if m and values[0] == resource_type:
            pairs += _tag_pairs(form, f"TagSpecification.{m.group(1)}.Tag")
    return pairs


def _utc(when: datetime.datetime) -> datetime.datetime:
    """`when` in UTC without a zone (moto keeps some times naive in UTC, some aware)."""
    if when.tzinfo is not None:
        when = when.astimezone(datetime.timezone.utc)
    return when.replace(tzinfo=None)


def _not_yet_visible(environ: dict, account: str, region: str) -> "Fault | None":
    """EC2's eventual consistency: "If you run a command to modify or describe a resource
    immediately after its creation, its ID might not have propagated throughout the system,
    and you will get an error responding that the resource does not exist" (EC2 Developer
    Guide, "Eventual consistency in the Amazon EC2 API"; the codes InvalidAMIID.NotFound
    and InvalidSnapshot.NotFound). A request naming an AMI or snapshot made less than
    consistency_seconds ago gets that error. Listings are not filtered."""
    delay = SETTINGS["consistency_seconds"]
    if not delay:
        return None
    from moto.core.utils import utcnow
    from moto.ec2.models import ec2_backends

    form = parse_qs(environ.get("QUERY_STRING", ""))
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form"):
        form.update(parse_qs(read_body(environ).decode("utf-8", "replace")))
    backend = ec2_backends[account][region]
    named = re.compile(r"(ImageId|SnapshotId|ResourceId)(\.\d+)?|BlockDeviceMapping\.\d+\.Ebs\.SnapshotId")
    for key, values in form.items():
        if not named.fullmatch(key):
            continue
        for ident in values:
            if ident.startswith("ami-"):
                found, born = backend.amis.get(ident), "creation_date"
                fault = ("InvalidAMIID.NotFound", f"The image id '[{ident}]' does not exist")
            elif ident.startswith("snap-"):
                found, born = backend.snapshots.get(ident), "start_time"
                fault = ("InvalidSnapshot.NotFound", f"The snapshot '{ident}' does not exist.")
            else:
                continue
            when = getattr(found, born, None)
            if isinstance(when, datetime.datetime) and (
                    _utc(utcnow()) - _utc(when)).total_seconds() < delay:
                return Fault({"status": 400, "code": fault[0], "message": fault[1]})
    return None


IAM_READS_BY_NAME = {
    "GetRole": "RoleName", "GetRolePolicy": "RoleName", "ListRolePolicies": "RoleName",
    "ListAttachedRolePolicies": "RoleName", "GetUser": "UserName", "GetUserPolicy": "UserName",
    "ListUserPolicies": "UserName", "ListAttachedUserPolicies": "UserName",
    "ListAccessKeys": "UserName", "ListGroupsForUser": "UserName",
}


def _young_iam_entity(account: str, kind: str, name: str) -> bool:
    """Whether the role or user `name` was made less than iam_consistency_seconds ago."""
    delay = SETTINGS["iam_consistency_seconds"]
    if not delay or not name:
        return False
    from moto.core.utils import utcnow

    backend = iam_backends[account][get_partition("us-east-1")]
    try:
        entity = backend.get_role(name) if kind == "RoleName" else backend.get_user(name)
    except Exception:  # noqa: BLE001 - not there at all: IAM's own answer
        return False
    when = getattr(entity, "create_date", None)
    return isinstance(when, datetime.datetime) and (
        _utc(utcnow()) - _utc(when)).total_seconds() < delay


def _iam_not_yet_visible(environ: dict, service: str, action: str, account: str) -> "Fault | None":
    """IAM is eventually consistent: "changes are not always immediately visible ... IAM ...
    achieves high availability by replicating data across multiple servers ... a change that
    you make ... might take time to become visible" (IAM User Guide, Troubleshooting IAM,
    "Changes that I make are not always immediately visible"). With iam_consistency_seconds,
    a role or user younger than that is unknown to reads naming it (NoSuchEntity) and cannot
    be assumed yet (AccessDenied); VM Import/Export cannot use such a role either (ImportTask).
    How long is not documented. Writes go through."""
    if not SETTINGS["iam_consistency_seconds"] or service not in ("iam", "sts"):
        return None
    form = parse_qs(environ.get("QUERY_STRING", ""))
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form"):
        form.update(parse_qs(read_body(environ).decode("utf-8", "replace")))
    first = lambda key: (form.get(key) or [""])[0]  # noqa: E731
    if service == "iam" and action in IAM_READS_BY_NAME:
        kind = IAM_READS_BY_NAME[action]
        name = first(kind)
        if _young_iam_entity(account, kind, name):
            what = "role" if kind == "RoleName" else "user"
            return Fault({"status": 404, "code": "NoSuchEntity",
                          "message": f"The {what} with name {name} cannot be found."})
    if service == "sts" and action == "AssumeRole":
        arn = first("RoleArn")
        name = arn.rsplit("/", 1)[-1]
        owner = arn.split(":")[4] if arn.count(":") >= 5 else account
        if _young_iam_entity(owner, "RoleName", name):
            return Fault({"status": 403, "code": "AccessDenied",
                          "message": f"User is not authorized to perform: sts:AssumeRole on "
                                     f"resource: {arn}"})
    return None


def _object_exists(bucket: str, key: str, account: str, region: str) -> bool:
    owner = _bucket_account(bucket, account)
    try:
        return s3_backends[owner][get_partition(region or "us-east-1")].get_object(bucket, key) is not None
    except Exception:  # noqa: BLE001 - no such bucket: S3's own error follows
        return True


def _bucket_account(bucket: str, caller: str) -> str:
    """The account that owns `bucket` (the caller's, for one not made yet)."""
    owner = s3_backends.bucket_accounts.get(bucket)
    return owner[1] if owner else caller


def _ec2_arn(partition: str, region: str, kind: str, ident: str = "*") -> str:
    return f"arn:{partition}:ec2:{region}::{kind}/{ident}"


# KMS. An encrypted snapshot's key is used on the caller's behalf, so the caller must be
# allowed to use it. The actions, per path:
# - EBS direct APIs on encrypted snapshots: "kms:Encrypt, kms:Decrypt, kms:GenerateDataKey,
#   kms:GenerateDataKeyWithoutPlaintext, kms:ReEncrypt*, kms:CreateGrant, kms:DescribeKey"
#   (EBS User Guide, "Control access to EBS direct APIs using IAM", "Permissions to use AWS
#   KMS keys").
# - Everything else on EBS encryption (CopyImage's source and new snapshots): "kms:CreateGrant,
#   kms:Decrypt, kms:DescribeKey, kms:GenerateDataKeyWithoutPlaintext, kms:ReEncrypt*" (EBS
#   User Guide, "Amazon EBS encryption", "Permissions for users").
# ReEncrypt* stands for its two actions (Service Authorization Reference, AWS KMS).
KMS_EBS = ("kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey",
           "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo")
KMS_EBS_DIRECT = KMS_EBS + ("kms:Encrypt", "kms:GenerateDataKey")


def _customer_key(account: str, region: str, key: str | None) -> str | None:
    """The ARN of `key` (an id, ARN or alias) when IAM policies decide who may use it: a
    customer managed key ("If you are using a customer managed key, you must create a new
    key policy or modify the existing key policy ... to grant the principal access"; with
    KMS's default key policy IAM policies grant it). None for the AWS managed key
    alias/aws/ebs ("By default, all principals in the account have access to the default
    AWS managed KMS key for Amazon EBS encryption": EBS User Guide, "Control access to EBS
    direct APIs using IAM", Permissions to use AWS KMS keys), and for a key moto does not
    know."""
    from moto.kms import kms_backends

    if not key:
        return None
    key_region = key.split(":")[3] if key.startswith("arn:") and key.count(":") >= 5 else region
    try:
        kms = kms_backends[account][key_region]
        found = kms.describe_key(key)
    except Exception:  # noqa: BLE001 - a key moto does not know (see the docstring)
        return None
    aliases = [a.alias_name for a in kms.list_aliases(found.id)]
    if any(name.startswith("alias/aws/") for name in aliases):
        return None
    return found.arn


def _via(service: str, region: str) -> str:
    """A kms:ViaService value: the service's name in `region`, as the KMS Developer Guide's
    table gives EBS's ("ec2.AWS_region.amazonaws.com (EBS only)": "AWS KMS condition keys",
    kms:ViaService)."""
    suffix = "amazonaws.com.cn" if get_partition(region) == "aws-cn" else "amazonaws.com"
    return f"{service}.{region}.{suffix}"


def _kms_needs(account: str, region: str, keys: list[str | None],
               actions: tuple[str, ...], via: str | None) -> list[tuple[str, str, dict]]:
    """The KMS actions on each customer managed key among `keys`. EBS creates its grants on
    the user's behalf, so CreateGrant carries kms:GrantIsForAWSResource = true ("use the
    kms:GrantIsForAWSResource condition key to allow the user to create grants on the KMS
    key only when the grant is created on the user's behalf by an AWS service": EBS User
    Guide, "Amazon EBS encryption", Permissions for users). A service that uses the key for
    the caller puts its name in kms:ViaService (`via`; KMS Developer Guide, "AWS KMS
    condition keys": "EBS: ec2.AWS_region.amazonaws.com"); None where AWS names none."""
    needs = []
    # A request's own keys (tags, ...) are not the key's: only the global ones carry over.
    ctx = {"aws:RequestedRegion": region, "aws:PrincipalAccount": account}
    if via is not None:
        ctx["kms:ViaService"] = via
    for arn in dict.fromkeys(a for a in (_customer_key(account, region, k) for k in keys) if a):
        for action in actions:
            extra = {"kms:GrantIsForAWSResource": "true"} if action == "kms:CreateGrant" else {}
            needs.append((action, arn, {**ctx, **extra}))
    return needs


def _snapshot_key(account: str, region: str, snapshot_id: str | None) -> str | None:
    from moto.ec2.models import ec2_backends

    snap = ec2_backends[account][region].snapshots.get(snapshot_id or "")
    return getattr(snap, "kms_key_id", None) if snap is not None and snap.encrypted else None


def _copy_kms_needs(account: str, region: str, first: Any) -> list[tuple[str, str, dict]]:
    """The KMS needs of a CopyImage: on each source snapshot's key, and on the copy's (the
    request's KmsKeyId, else the target region's default EBS key when the copy is encrypted:
    see copy_image), each through EC2 (kms:ViaService; the source key's region as seeded)."""
    from moto.ec2.models import ec2_backends

    source_region = first("SourceRegion") or region
    source, held_by = _source_ami(account, source_region, first("SourceImageId"))
    keys: list[str | None] = []
    encrypted = first("Encrypted").lower() == "true" or ec2_backends[account][region].ebs_encryption_by_default
    for mapping in getattr(source, "block_device_mappings", None) or []:
        snapshot = ((mapping.get("Ebs") or {}) if isinstance(mapping, dict) else {}).get("SnapshotId")
        key = _snapshot_key(held_by.account_id, source_region, snapshot)
        keys.append(key)
        encrypted = encrypted or key is not None
    via_region = source_region if SETTINGS["copy_source_key_via"] == "source" else region
    needs = _kms_needs(account, region, keys, KMS_EBS, _via("ec2", via_region))
    if encrypted:
        target = first("KmsKeyId") or standin_ebs.default_ebs_key(ec2_backends[account][region])
        needs += _kms_needs(account, region, [target], KMS_EBS, _via("ec2", region))
    return needs


def needed_for(service: str, action: str, environ: dict, form: dict[str, list[str]],
               body: bytes | None, region: str, account: str) -> list[tuple[str, str, dict]]:
    """What a request needs in IAM: (action, resource ARN, context) triples, all of which
    must be allowed. Mirrors the Service Authorization Reference for what imgpub calls."""
    partition = get_partition(region or "us-east-1")
    # aws:PrincipalAccount is in every request's context (IAM User Guide, "AWS global
    # condition context keys").
    ctx: dict[str, Any] = {"aws:RequestedRegion": region, "aws:PrincipalAccount": account}
    first = lambda name: (form.get(name) or [""])[0]  # noqa: E731
    if service == "s3":
        parts = [p for p in environ["PATH_INFO"].split("/") if p]
        bucket = parts[0] if parts else "*"
        key = "/".join(parts[1:])
        # The account that owns the bucket (the caller's, for one not made yet): s3:ResourceAccount
        # on every S3 action imgpub calls (Service Authorization Reference, Amazon S3), and
        # aws:ResourceAccount (IAM User Guide, global condition keys; S3 is not excepted).
        owner_account = _bucket_account(bucket, account)
        ctx = {**ctx, "s3:ResourceAccount": owner_account, "aws:ResourceAccount": owner_account}
        bucket_arn = f"arn:{partition}:s3:::{bucket}"
        object_arn = f"{bucket_arn}/{key}"
        on_bucket = {
            "CreateBucket": "s3:CreateBucket", "GetBucketLocation": "s3:GetBucketLocation",
            "ListObjects": "s3:ListBucket", "HeadBucket": "s3:ListBucket",
            "ListMultipartUploads": "s3:ListBucketMultipartUploads",
            "DeleteBucket": "s3:DeleteBucket",
            "PutBucketLifecycleConfiguration": "s3:PutLifecycleConfiguration",
            "GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
            "DeleteBucketLifecycle": "s3:PutLifecycleConfiguration",
        }
        on_object = {
            "PutObject": "s3:PutObject", "CreateMultipartUpload": "s3:PutObject",
            "UploadPart": "s3:PutObject", "CompleteMultipartUpload": "s3:PutObject",
            "GetObject": "s3:GetObject", "HeadObject": "s3:GetObject",
            "DeleteObject": "s3:DeleteObject", "AbortMultipartUpload": "s3:AbortMultipartUpload",
            "ListParts": "s3:ListMultipartUploadParts",
        }
        if action in on_bucket:
            return [(on_bucket[action], bucket_arn, ctx)]
        if action in on_object:
            return [(on_object[action], object_arn, ctx)]
        return [(f"s3:{action}", bucket_arn, ctx)]
    if service == "ec2":
        ec2 = lambda kind, ident="*": _ec2_arn(partition, region, kind, ident)  # noqa: E731
        if action == "RegisterImage":
            new_tags = _request_tags(_tag_specification(form, "image"))
            needs = [("ec2:RegisterImage", ec2("image"), {**ctx, **new_tags})]
            for k, v in form.items():
                if re.fullmatch(r"BlockDeviceMapping\.\d+\.Ebs\.SnapshotId", k):
                    needs.append(("ec2:RegisterImage", ec2("snapshot", v[0]),
                                  {**ctx, **_resource_tags(account, region, v[0])}))
            if _form_list(form, "TagSpecification.1.Tag") or any(
                k.startswith("TagSpecification.") for k in form
            ):
                needs.append(("ec2:CreateTags", ec2("image"),
                              {**ctx, **new_tags, "ec2:CreateAction": "RegisterImage"}))
            return needs
        if action == "ImportSnapshot":
            task = f"arn:{partition}:ec2:{region}:{account}:import-snapshot-task/*"
            return [("ec2:ImportSnapshot", task, ctx), ("ec2:ImportSnapshot", ec2("snapshot"), ctx)]
        if action == "CopyImage":
            # The source AMI too: "Starting October 28, 2024, you can specify resource-level
            # permissions for the CopyImage action on the source AMI. Resource-level
            # permissions for the target AMI are available as before." (EC2 User Guide,
            # "Grant permissions to copy Amazon EC2 AMIs").
            source_region = first("SourceRegion") or region
            source = _ec2_arn(partition, source_region, "image", first("SourceImageId") or "*")
            # The source AMI takes no aws:ResourceTag for CopyImage (Service Authorization
            # Reference, Amazon EC2: CopyImage's image lists request tags only).
            needs = [
                ("ec2:CopyImage", ec2("image"),
                 {**ctx, **_request_tags(_tag_specification(form, "image"))}),
                ("ec2:CopyImage", source, ctx),
                ("ec2:CopyImage", ec2("snapshot"),
                 {**ctx, **_request_tags(_tag_specification(form, "snapshot"))}),
            ]
            # Tagging on create is CreateTags with ec2:CreateAction on each kind tagged.
            for kind in ("image", "snapshot"):
                pairs = _tag_specification(form, kind)
                if pairs:
                    needs.append(("ec2:CreateTags", ec2(kind),
                                  {**ctx, **_request_tags(pairs), "ec2:CreateAction": "CopyImage"}))
            return needs + _copy_kms_needs(account, region, first)
        if action == "CreateTags":
            pairs = _tag_pairs(form, "Tag")
            needs = []
            for rid in _form_list(form, "ResourceId"):
                kind = "image" if rid.startswith("ami-") else "snapshot" if rid.startswith("snap-") else "*"
                needs.append(("ec2:CreateTags", ec2(kind, rid),
                              {**ctx, **_request_tags(pairs),
                               **_resource_tags(account, region, rid)}))
            return needs or [("ec2:CreateTags", "*", ctx)]
        if action == "TerminateInstances":
            # Each instance, by its ARN (with the account, unlike images and snapshots), with
            # its tags as aws:ResourceTag (Service Authorization Reference, Amazon EC2:
            # TerminateInstances, resource type instance*, arn:${Partition}:ec2:${Region}:
            # ${Account}:instance/${InstanceId}).
            return [("ec2:TerminateInstances",
                     f"arn:{partition}:ec2:{region}:{account}:instance/{iid}",
                     {**ctx, **_resource_tags(account, region, iid)})
                    for iid in _form_list(form, "InstanceId")] or [("ec2:TerminateInstances", "*", ctx)]
        # Each on its image (Service Authorization Reference, Amazon EC2: resource type
        # image* for every one of them; the reference check below holds it to AWS's data).
        by_image = {"ModifyImageAttribute", "DescribeImageAttribute", "DeregisterImage",
                    "EnableImageDeprecation", "DisableImageDeprecation", "DisableImage",
                    "EnableImage", "EnableImageDeregistrationProtection",
                    "DisableImageDeregistrationProtection"}
        by_image |= {"RestoreImageFromRecycleBin"}
        if action == "CreateImageUsageReport":
            # On the image (with its tags) and on the new report (Service Authorization
            # Reference, Amazon EC2: image* and image-usage-report*).
            image = first("ImageId")
            report = f"arn:{partition}:ec2:{region}:{account}:image-usage-report/*"
            return [("ec2:CreateImageUsageReport", ec2("image", image),
                     {**ctx, **_resource_tags(account, region, image)}),
                    ("ec2:CreateImageUsageReport", report, ctx)]
        by_snapshot = {"ModifySnapshotAttribute", "DescribeSnapshotAttribute", "DeleteSnapshot",
                       "RestoreSnapshotFromRecycleBin"}
        if action in by_image:
            image = first("ImageId")
            return [(f"ec2:{action}", ec2("image", image),
                     {**ctx, **_resource_tags(account, region, image)})]
        if action in by_snapshot:
            ctx = {**ctx, **_resource_tags(account, region, first("SnapshotId"))}
            if action == "ModifySnapshotAttribute":
                # The accounts and groups a request adds (Service Authorization Reference,
                # EC2: ec2:Add/userId and ec2:Add/group on ModifySnapshotAttribute).
                add_users = [
                    v for k, v in ((k, v[0]) for k, v in form.items())
                    if re.fullmatch(r"CreateVolumePermission\.Add\.\d+\.UserId", k)
                ]
                add_groups = [
                    v for k, v in ((k, v[0]) for k, v in form.items())
                    if re.fullmatch(r"CreateVolumePermission\.Add\.\d+\.Group", k)
                ]
                if first("OperationType") == "add":
                    add_users += _form_list(form, "UserId")
                    add_groups += _form_list(form, "UserGroup")
                ctx = dict(ctx)
                if add_users:
                    ctx["ec2:Add/userId"] = add_users
                if add_groups:
                    ctx["ec2:Add/group"] = add_groups
            return [(f"ec2:{action}", ec2("snapshot", first("SnapshotId")), ctx)]
        return [(f"ec2:{action}", "*", ctx)]
    if service == "iam":
        if first("RoleName"):
            from moto.iam.models import iam_backends

            name = first("RoleName")
            try:
                arn = iam_backends[account][partition].get_role(name).arn
            except Exception:  # noqa: BLE001 - a role that is not there yet
                arn = f"arn:{partition}:iam::{account}:role/{name}"
            return [(f"iam:{action}", arn, ctx)]
        if first("UserName"):
            return [(f"iam:{action}", f"arn:{partition}:iam::{account}:user/{first('UserName')}", ctx)]
        if first("PolicySourceArn"):
            return [(f"iam:{action}", first("PolicySourceArn"), ctx)]
        if first("PolicyArn"):
            return [(f"iam:{action}", first("PolicyArn"), ctx)]
        return [(f"iam:{action}", "*", ctx)]
    if service == "ssm":
        doc = json.loads(body or b"{}")
        name = doc.get("Name", "")
        arn = f"arn:{partition}:ssm:{region}:{account}:parameter/{name.lstrip('/')}"
        needs = [(f"ssm:{action}", arn, ctx)]
        if action == "PutParameter" and doc.get("DataType") == "aws:ec2:image":
            # SSM checks the AMI with the caller's own credentials.
            needs.append(("ec2:DescribeImages", "*", ctx))
        return needs
    if service == "ebs":
        # ebs: actions act on the snapshot (ec2's ARN); tags on StartSnapshot need
        # ec2:CreateTags ("This policy also ensures that the user has access to create tags.
        # The StartSnapshot action is the only action that can specify tags": EBS User
        # Guide, "Control access to EBS direct APIs using IAM", permissions to write
        # snapshots), with ec2:CreateAction = StartSnapshot as for every tag on create
        # (Service Authorization Reference, Amazon EC2: CreateTags, ec2:CreateAction).
        snapshot = standin_ebs.EbsDirect.snapshot_of(environ["PATH_INFO"])
        snapshot_arn = _ec2_arn(partition, region, "snapshot",
                                "*" if action == "StartSnapshot" else snapshot or "*")
        tags = json.loads(body or b"{}").get("Tags") if action == "StartSnapshot" else None
        if action == "StartSnapshot":
            # StartSnapshot's Tags: aws:RequestTag/aws:TagKeys at the action's level; its
            # ParentSnapshotId: ebs:ParentSnapshot (Service Authorization Reference, EBS).
            ctx = {**ctx, **_request_tags([(t.get("Key", ""), t.get("Value", ""))
                                           for t in tags or []])}
            parent = json.loads(body or b"{}").get("ParentSnapshotId")
            if parent:
                ctx = {**ctx, "ebs:ParentSnapshot": _ec2_arn(partition, region, "snapshot",
                                                             parent)}
        elif snapshot:
            ctx = {**ctx, **_resource_tags(account, region, snapshot)}
        needs = [(f"ebs:{action}", snapshot_arn, ctx)]
        if tags:
            needs.append(("ec2:CreateTags", snapshot_arn,
                          {**ctx, "ec2:CreateAction": "StartSnapshot"}))
        # The key the snapshot is written under: StartSnapshot's (or the account's default
        # EBS key, as start_snapshot decides), then the snapshot's own for each block.
        if action == "StartSnapshot":
            from moto.ec2.models import ec2_backends

            doc = json.loads(body or b"{}")
            backend = ec2_backends[account][region]
            key = None
            if doc.get("ParentSnapshotId"):
                # "If you specify an encrypted parent snapshot, you must have permission to
                # use the KMS key that was used to encrypt the parent snapshot." (StartSnapshot)
                key = _snapshot_key(account, region, doc["ParentSnapshotId"])
            elif doc.get("Encrypted") or backend.ebs_encryption_by_default:
                key = doc.get("KmsKeyArn") or standin_ebs.default_ebs_key(backend)
            needs += _kms_needs(account, region, [key], KMS_EBS_DIRECT,
                                _via(SETTINGS["ebs_direct_via_service"], region))
        elif action == "PutSnapshotBlock":
            needs += _kms_needs(account, region, [_snapshot_key(account, region, snapshot)],
                                KMS_EBS_DIRECT, _via(SETTINGS["ebs_direct_via_service"], region))
        return needs
    if service == "rbin":
        # Service Authorization Reference, Recycle Bin: CreateRule on rule* with
        # aws:RequestTag, aws:TagKeys and rbin:Request/ResourceType; ListRules on * with
        # rbin:Request/ResourceType; the actions on one rule on its ARN with
        # aws:ResourceTag and rbin:Attribute/ResourceType.
        doc = json.loads(body or b"{}") if body else {}
        rule_arn = f"arn:{partition}:rbin:{region}:{account}:rule/"
        if action == "CreateRule":
            pairs = [(t.get("Key", ""), t.get("Value", "")) for t in doc.get("Tags") or []]
            needs = [("rbin:CreateRule", rule_arn + "*",
                      {**ctx, **_request_tags(pairs),
                       "rbin:Request/ResourceType": doc.get("ResourceType", "")})]
            if pairs:
                # Tags on create need rbin:TagResource too (Service Authorization
                # Reference, Recycle Bin: CreateRule's dependent actions).
                needs.append(("rbin:TagResource", rule_arn + "*",
                              {**ctx, **_request_tags(pairs)}))
            return needs
        if action == "ListRules":
            return [("rbin:ListRules", "*",
                     {**ctx, "rbin:Request/ResourceType": doc.get("ResourceType", "")})]
        ident = standin_rbin.RecycleBin.rule_of(environ["PATH_INFO"])
        rule = RBIN.rules.get((account, region), {}).get(ident or "")
        if rule is not None:
            ctx = {**ctx, "rbin:Attribute/ResourceType": rule.resource_type,
                   **{f"aws:ResourceTag/{t['Key']}": t["Value"] for t in rule.tags}}
        if action == "TagResource":
            ctx = {**ctx, **_request_tags([(t.get("Key", ""), t.get("Value", ""))
                                           for t in doc.get("Tags") or []])}
        return [(f"rbin:{action}", rule_arn + (ident or "*"), ctx)]
    if service == "kms":
        # A call straight to KMS: the action on the key the request names (Service
        # Authorization Reference, AWS KMS: the key resource type). No kms:ViaService and no
        # kms:GrantIsForAWSResource: both are set only when an integrated AWS service calls
        # KMS for the caller (KMS Developer Guide, "AWS KMS condition keys").
        from moto.kms import kms_backends

        named = json.loads(body or b"{}").get("KeyId") or ""
        try:
            arn = kms_backends[account][region].describe_key(named).arn
        except Exception:  # noqa: BLE001 - a key moto does not know: as for any resource
            arn = "*"
        return [(f"kms:{action}", arn, ctx)]
    if service == "sts":
        if action == "GetCallerIdentity":
            return []  # needs no permission, even under an explicit deny
        if action == "AssumeRole":
            return [("sts:AssumeRole", first("RoleArn"), ctx)]
        return [(f"sts:{action}", "*", ctx)]
    return [(f"{service}:{action}", "*", ctx)]


# Every (request, action, resource, condition keys) the stand-in judged: GET /_standin/needs
# hands them to the reference check (test_standin.py), so a mapping written here by hand
# that names an action, resource type or condition key AWS's data does not have fails.
NEEDS_SEEN: set[tuple[str, str, str, tuple[str, ...]]] = set()
NEEDS_LOCK = threading.Lock()


DENIED_CODE = {"ec2": "UnauthorizedOperation", "ssm": "AccessDeniedException",
               "ebs": "AccessDeniedException", "rbin": "AccessDeniedException",
               # KMS API Reference, Common Errors: AccessDeniedException, HTTP 400.
               "kms": "AccessDeniedException"}


def account_of(environ: dict) -> str:
    """The account whose key signed the request (moto's default for unknown keys)."""
    from moto.iam.models import get_account_id_from

    m = re.search(r"Credential=([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
    return get_account_id_from(m.group(1) if m else "")


def denial(service: str, identity: Identity, action: str, resource: str) -> "Fault":
    return Fault({
        "status": 400 if service in ("ssm", "kms") else 403,
        "code": DENIED_CODE.get(service, "AccessDenied"),
        "message": f"User: {identity.arn} is not authorized to perform: {action} on resource: "
                   f"{resource} because no identity-based policy allows the {action} action",
    })


def simulate_principal_policy(form: dict[str, list[str]]) -> tuple[str, bytes]:
    """IAM SimulatePrincipalPolicy from the evaluator: (HTTP status, XML body)."""
    source = (form.get("PolicySourceArn") or [""])[0]
    identity = identity_for_arn(source)
    if identity is None:
        return "404 Not Found", (
            '<ErrorResponse><Error><Type>Sender</Type><Code>NoSuchEntity</Code>'
            f'<Message>No such user or role: {source}</Message></Error>'
            '<RequestId>standin</RequestId></ErrorResponse>'
        ).encode()
    actions = _form_list(form, "ActionNames.member")
    resources = _form_list(form, "ResourceArns.member") or ["*"]
    context: dict[str, Any] = {}
    n = 1
    while f"ContextEntries.member.{n}.ContextKeyName" in form:
        key = form[f"ContextEntries.member.{n}.ContextKeyName"][0]
        values = _form_list(form, f"ContextEntries.member.{n}.ContextKeyValues.member")
        kind = (form.get(f"ContextEntries.member.{n}.ContextKeyType") or ["string"])[0]
        context[key] = values if kind.endswith("List") else (values[0] if values else "")
        n += 1
    decisions = {"Allowed": "allowed", "ExplicitlyDenied": "explicitDeny",
                 "ImplicitlyDenied": "implicitDeny"}
    members = []
    for action in actions:
        per_resource = []
        for resource in resources:
            try:
                decision = decisions[identity.decide(action, resource, context)]
            except EvaluatorError:
                decision = "implicitDeny"
            per_resource.append((resource, decision))
        overall = next((d for _, d in per_resource if d != "allowed"), "allowed")
        specific = "".join(
            f"<member><EvalResourceName>{r}</EvalResourceName>"
            f"<EvalResourceDecision>{d}</EvalResourceDecision></member>"
            for r, d in per_resource
        )
        members.append(
            f"<member><EvalActionName>{action}</EvalActionName>"
            f"<EvalResourceName>{per_resource[0][0]}</EvalResourceName>"
            f"<EvalDecision>{overall}</EvalDecision><MatchedStatements/>"
            f"<MissingContextValues/><ResourceSpecificResults>{specific}"
            f"</ResourceSpecificResults></member>"
        )
    body = (
        '<SimulatePrincipalPolicyResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">'
        "<SimulatePrincipalPolicyResult><IsTruncated>false</IsTruncated><EvaluationResults>"
        + "".join(members)
        + "</EvaluationResults></SimulatePrincipalPolicyResult>"
        "<ResponseMetadata><RequestId>standin</RequestId></ResponseMetadata>"
        "</SimulatePrincipalPolicyResponse>"
    )
    return "200 OK", body.encode()


# --------------------------------------------------------------------------------------
# The WSGI layer: request counts, faults, control endpoints.

S3_SUBRESOURCES = [
    ("POST", "uploads", "CreateMultipartUpload"),
    ("GET", "uploads", "ListMultipartUploads"),
    ("GET", "location", "GetBucketLocation"),
    # Without these a PUT ?lifecycle counted (and was authorized) as CreateBucket.
    ("PUT", "lifecycle", "PutBucketLifecycleConfiguration"),
    ("GET", "lifecycle", "GetBucketLifecycleConfiguration"),
    ("DELETE", "lifecycle", "DeleteBucketLifecycle"),
    ("PUT", "policy", "PutBucketPolicy"),
    ("GET", "policy", "GetBucketPolicy"),
    ("PUT", "tagging", "PutBucketTagging"),
    ("GET", "tagging", "GetBucketTagging"),
]


def s3_action(method: str, path: str, query: dict[str, list[str]]) -> str:
    parts = [p for p in path.split("/") if p]
    if "uploadId" in query:
        return {
            "PUT": "UploadPart",
            "POST": "CompleteMultipartUpload",
            "DELETE": "AbortMultipartUpload",
            "GET": "ListParts",
        }.get(method, method)
    for m, sub, name in S3_SUBRESOURCES:
        if method == m and sub in query:
            return name
    if len(parts) <= 1:
        return {
            "PUT": "CreateBucket",
            "GET": "ListObjects" if parts else "ListBuckets",
            "HEAD": "HeadBucket",
            "DELETE": "DeleteBucket",
        }.get(method, method)
    return {
        "PUT": "PutObject",
        "GET": "GetObject",
        "HEAD": "HeadObject",
        "DELETE": "DeleteObject",
    }.get(method, method)


def _reserved_tag_key(service: str, action: str, body: bytes | None) -> "Fault | None":
    """A tag key in AWS's reserved prefix: "The aws: prefix is reserved for AWS use" (EC2
    User Guide, tag restrictions; EC2 API reference, Tag: "May not begin with aws:"), on
    CreateTags and on the tags a create call puts on (TagSpecification.N.Tag.M.Key), and on
    EBS StartSnapshot's Tags. moto takes them. AWS does not say which error it answers:
    EC2's usual InvalidParameterValue, EBS's ValidationException."""
    if service == "ec2" and body:
        form = parse_qs(body.decode("utf-8", "replace"))
        keys = [v[0] for k, v in form.items()
                if re.fullmatch(r"(TagSpecification\.\d+\.)?Tag\.\d+\.Key", k)]
        if any(key.lower().startswith("aws:") for key in keys):
            return Fault({"status": 400, "code": "InvalidParameterValue",
                          "message": "Tag keys starting with 'aws:' are reserved for internal use"})
    if service == "ebs" and action == "StartSnapshot" and body:
        try:
            tags = json.loads(body).get("Tags") or []
        except ValueError:
            return None
        if any(str(t.get("Key", "")).lower().startswith("aws:") for t in tags):
            return Fault({"status": 400, "code": "ValidationException",
                          "message": "Tag keys starting with 'aws:' are reserved"})
    return None


class Fault:
    def __init__(self, spec: dict[str, Any]):
        self.action = spec.get("action", "*")
        self.service = spec.get("service")
        self.status = int(spec.get("status", 500))
        self.code = spec.get("code", "InternalError")
        self.message = spec.get("message", "We encountered an internal error. Please try again.")
        self.count = int(spec.get("count", 1))
        self.delay = float(spec.get("delay", 0))
        self.drop = bool(spec.get("drop", False))
        self.after = bool(spec.get("after", False))
        self.hold = bool(spec.get("hold", False))
        self.region = spec.get("region")
        # Matching requests let through before the fault applies (a test's "the n-th call").
        self.skip = int(spec.get("skip", 0))

    def matches(self, service: str, action: str, region: str) -> bool:
        return (
            self.action in ("*", action)
            and self.service in (None, service)
            and self.region in (None, region)
        )


# The throttling error each service answers, as (status, code).
THROTTLING = {
    "s3": (503, "SlowDown"),
    "ec2": (503, "RequestLimitExceeded"),
    "ssm": (400, "ThrottlingException"),
    "iam": (400, "Throttling"),
    "sts": (400, "Throttling"),
    # EBS API reference, common errors: "RequestThrottledException: The number of API
    # requests has exceeded the maximum allowed API request throttling limit" (HTTP 400).
    "ebs": (400, "RequestThrottledException"),
}


class Chaos:
    """Random faults at a fixed rate from a seeded generator (POST /_standin/chaos)."""

    def __init__(self, spec: dict[str, Any]):
        import random

        self.random = random.Random(int(spec.get("seed", 0)))
        self.rate = float(spec.get("rate", 0.05))
        self.after_share = float(spec.get("after_share", 0.5))
        # Only these services' requests draw faults (None: every service's).
        self.services: list[str] | None = spec.get("services")
        self.injected: dict[str, int] = {}

    def draw(self, service: str) -> Fault | None:
        """The fault for the next request, or None; called under the app's lock."""
        if self.services is not None and service not in self.services:
            return None
        if self.random.random() >= self.rate:
            return None
        after = self.random.random() < self.after_share
        kind = self.random.choice(["500", "drop"] if after else ["500", "throttle", "drop", "slow"])
        name = ("after-" if after else "") + kind
        self.injected[name] = self.injected.get(name, 0) + 1
        if kind == "slow":
            return Fault({"delay": round(self.random.uniform(0.2, 1.5), 2)})
        if kind == "throttle":
            status, code = THROTTLING.get(service, (503, "ServiceUnavailable"))
            return Fault({"status": status, "code": code, "message": "Rate exceeded"})
        return Fault({"drop": kind == "drop", "after": after})

    def report(self) -> dict[str, Any]:
        return {"injected": sum(self.injected.values()), "by_kind": self.injected}


class StandinApp:
    def __init__(self, app: Any):
        self.app = app
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.payloads: dict[str, dict[str, int]] = {}
        self.faults: list[Fault] = []
        self.chaos: Chaos | None = None
        # Every request as it arrived: seconds since start, "service.Action", region.
        self.log: list[dict[str, Any]] = []
        # Requests being served, and those held (faults with "hold") until a release.
        self.inflight = 0
        self.held = 0
        self.release = threading.Event()
        # S3 upload ids completed (see _complete_once).
        self.completed_uploads: set[str] = set()
        self.completed_answers: dict[str, bytes] = {}
        # S3 multipart checksums (moto keeps none): each upload's algorithm from
        # CreateMultipartUpload, and each part's CRC32C as S3 computed it.
        self.upload_algorithms: dict[str, str | None] = {}
        self.part_crc32c: dict[tuple[str, int], str] = {}

    @staticmethod
    def _json(start_response: Any, status: str, body: Any) -> list[bytes]:
        data = json.dumps(body).encode()
        start_response(
            status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return [data]

    def _control(self, environ: dict, start_response: Any) -> list[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ["PATH_INFO"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length) or b"{}") if length else {}
        with self.lock:
            if path == "/_standin/requests" and method == "GET":
                return self._json(start_response, "200 OK", self.counts)
            if path == "/_standin/payloads" and method == "GET":
                return self._json(start_response, "200 OK", self.payloads)
            if path == "/_standin/requests/reset" and method == "POST":
                self.counts.clear()
                self.payloads.clear()
                self.log.clear()
                return self._json(start_response, "200 OK", {})
            if path == "/_standin/log" and method == "GET":
                with EVENTS_LOCK:
                    events = sorted(EVENTS, key=lambda e: e["t"])
                return self._json(start_response, "200 OK", {
                    "now": round(time.monotonic() - STARTED, 3),
                    "requests": self.log,
                    "events": events,
                })
            if path == "/_standin/needs" and method == "GET":
                with NEEDS_LOCK:
                    seen = sorted(NEEDS_SEEN)
                return self._json(start_response, "200 OK", [
                    {"op": f"stand-in {call}", "action": action, "arn": arn,
                     "condition_keys": list(keys)} for call, action, arn, keys in seen])
            if path == "/_standin/config":
                if method == "POST":
                    SETTINGS.update(body)
                return self._json(start_response, "200 OK", SETTINGS)
            if path == "/_standin/faults":
                if method == "POST":
                    self.faults.append(Fault(body))
                elif method == "DELETE":
                    self.faults.clear()
                return self._json(
                    start_response, "200 OK", [f.__dict__ for f in self.faults]
                )
            if path == "/_standin/inflight" and method == "GET":
                return self._json(start_response, "200 OK",
                                  {"inflight": self.inflight, "held": self.held})
            if path == "/_standin/release" and method == "POST":
                self.release.set()
                return self._json(start_response, "200 OK", {"released": self.held})
            if path == "/_standin/chaos":
                if method == "POST":
                    self.chaos = Chaos(body)
                    return self._json(start_response, "200 OK", self.chaos.report())
                report = self.chaos.report() if self.chaos else {"injected": 0, "by_kind": {}}
                if method == "DELETE":
                    self.chaos = None
                return self._json(start_response, "200 OK", report)
        if path == "/_standin/keys" and method == "POST":
            from moto.iam.models import iam_backends

            iam = iam_backends[body["account"]][body["partition"]]
            name = f"standin-{len(iam.users) + 1}"
            # The user's ARN names its partition by a region of it.
            region = {"aws-us-gov": "us-gov-west-1", "aws-cn": "cn-north-1"}.get(
                body["partition"], "us-east-1")
            iam.create_user(region_name=region, user_name=name, path="/", tags=[])
            iam.put_user_policy(name, "admin", json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
            key = iam.create_access_key(user_name=name)
            return self._json(start_response, "200 OK", {
                "AccessKeyId": key.access_key_id, "SecretAccessKey": key.secret_access_key})
        if path == "/_standin/kms/keys" and method == "POST":
            # A customer managed key with KMS's default key policy (IAM policies decide who
            # uses it), as an admin makes one for encrypted images.
            from moto.kms import kms_backends

            from moto.core import DEFAULT_ACCOUNT_ID

            account = body.get("account") or DEFAULT_ACCOUNT_ID
            key = kms_backends[account][body.get("region") or "us-east-1"].create_key(
                None, "ENCRYPT_DECRYPT", "SYMMETRIC_DEFAULT", "imgpub test key", None)
            return self._json(start_response, "200 OK", {"arn": key.arn})
        if path.startswith("/_standin/usage-reports/") and method == "POST":
            # A test's clock: when a report was made (it expires 30 days after).
            report = _find_usage_report(path.rsplit("/", 1)[1])
            if report is None:
                return self._json(start_response, "404 Not Found", {"error": "no such report"})
            report["CreationTime"] = datetime.datetime.fromisoformat(
                body["creation_time"].replace("Z", "+00:00"))
            return self._json(start_response, "200 OK", {})
        if path == "/_standin/rbin/elapse" and method == "POST":
            RBIN.elapse(float(body.get("days", 0)))
            return self._json(start_response, "200 OK", {"now": standin_rbin.iso(RBIN.now())})
        if path == "/_standin/ebs/expire" and method == "POST":
            return self._json(start_response, "200 OK", {"expired": EBS.expire()})
        if path == "/_standin/ebs/storage" and method == "GET":
            return self._json(start_response, "200 OK", EBS.storage())
        if path.startswith("/_standin/instances/") and method == "POST" and "launch_time" in body:
            # A test's clock: when an instance was launched (gc collects by LaunchTime).
            instance_id = path.rsplit("/", 1)[1]
            from moto.ec2.models import ec2_backends

            for account in list(ec2_backends.keys()):
                for backend in ec2_backends[account].values():
                    for reservation in backend.reservations.values():
                        for instance in reservation.instances:
                            if instance.id == instance_id:
                                # moto keeps naive UTC times; a time without a zone is UTC.
                                at = datetime.datetime.fromisoformat(
                                    body["launch_time"].replace("Z", "+00:00"))
                                if at.tzinfo is not None:
                                    at = at.astimezone(datetime.timezone.utc).replace(tzinfo=None)
                                instance.launch_time = at
                                return self._json(start_response, "200 OK",
                                                  {"launch_time": body["launch_time"]})
            return self._json(start_response, "404 Not Found", {"error": "no such instance"})
        if path.startswith("/_standin/images/"):
            ami_id = path.rsplit("/", 1)[1]
            from moto.ec2.models import ec2_backends

            for account in list(ec2_backends.keys()):
                for region, backend in ec2_backends[account].items():
                    ami = backend.amis.get(ami_id)
                    if ami is not None and method == "POST":
                        # A test's clock: when the AMI was made, deprecated, last launched
                        # (ISO 8601 strings, as DescribeImages shows them).
                        for key in ("deprecation_time", "last_launched_time"):
                            if key in body:
                                setattr(ami, key, body[key])
                        if "usage" in body:
                            # Who uses the AMI: [{"account_id", "resource_type", "count"}]
                            # (what a usage report then finds).
                            ami.usage = body["usage"]
                        if "creation_date" in body:  # moto keeps a datetime
                            ami.creation_date = datetime.datetime.fromisoformat(
                                body["creation_date"].replace("Z", "+00:00"))
                        return self._json(start_response, "200 OK", {"region": region})
                    if isinstance(ami, RegisteredAmi):
                        return self._json(
                            start_response,
                            "200 OK",
                            {
                                "region": region,
                                "params": ami.register_params,
                                "billing_products": ami.billing_products,
                            },
                        )
            return self._json(start_response, "404 Not Found", {"error": "no such image"})
        return self._json(start_response, "404 Not Found", {"error": "unknown control path"})

    @staticmethod
    def _identify(environ: dict) -> tuple[str, str, bytes | None]:
        """Returns (service, action, body bytes if we had to read them)."""
        auth = environ.get("HTTP_AUTHORIZATION", "")
        m = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", auth)
        service = m.group(1) if m else "unknown"
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if service == "s3":
            return service, s3_action(environ["REQUEST_METHOD"], environ["PATH_INFO"], query), None
        if service == "ebs":
            return service, EBS.action(environ["REQUEST_METHOD"], environ["PATH_INFO"]), None
        if service == "rbin":
            return service, RBIN.action(environ["REQUEST_METHOD"], environ["PATH_INFO"]), None
        if "Action" in query:
            return service, query["Action"][0], None
        target = environ.get("HTTP_X_AMZ_TARGET")
        if target:
            return service, target.rsplit(".", 1)[-1], None
        body = None
        if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length)
            form = parse_qs(body.decode("utf-8", "replace"))
            if "Action" in form:
                return service, form["Action"][0], body
        return service, environ["REQUEST_METHOD"] + " " + environ["PATH_INFO"], body

    def __call__(self, environ: dict, start_response: Any) -> Any:
        if environ["PATH_INFO"].startswith("/_standin/"):
            return self._control(environ, start_response)
        if environ["PATH_INFO"].startswith("/moto-api/"):
            # Read the body whether moto does or not: werkzeug drains an unread body after
            # answering with a blocking read, which waits for a client waiting for the close.
            length = int(environ.get("CONTENT_LENGTH") or 0)
            environ["wsgi.input"] = io.BytesIO(environ["wsgi.input"].read(length))
            if environ["PATH_INFO"] == "/moto-api/reset" and environ["REQUEST_METHOD"] == "POST":
                # moto's reset empties every account: the bin and the reports go with it.
                RBIN.reset()
                USAGE_REPORTS.clear()
            return self.app(environ, start_response)
        with self.lock:
            self.inflight += 1
        try:
            return self._request(environ, start_response)
        finally:
            with self.lock:
                self.inflight -= 1

    def _request(self, environ: dict, start_response: Any) -> Any:
        service, action, body = self._identify(environ)
        m = re.search(r"Credential=[^/]+/[^/]+/([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
        region = m.group(1) if m else ""
        _request_local.form_body = body
        if body is not None:
            environ["wsgi.input"] = io.BytesIO(body)
        fault = None
        # A DryRun changes nothing: counted apart, so counts of an action are real calls.
        dry = service == "ec2" and body is not None and b"DryRun=true" in body
        with self.lock:
            key = f"{service}.{action}" + (":DryRun" if dry else "")
            self.counts[key] = self.counts.get(key, 0) + 1
            self.log.append({"t": round(time.monotonic() - STARTED, 3), "call": key,
                             "region": region})
            if service == "s3":
                # How the client protected the payload: a SHA-256 in the signature, or not.
                sha = environ.get("HTTP_X_AMZ_CONTENT_SHA256", "")
                kind = "signed" if re.fullmatch(r"[0-9a-f]{64}", sha) else sha or "none"
                seen = self.payloads.setdefault(action, {})
                seen[kind] = seen.get(kind, 0) + 1
                if environ.get("HTTP_X_AMZ_CHECKSUM_CRC32C"):
                    seen["crc32c"] = seen.get("crc32c", 0) + 1
            for f in self.faults:
                if f.count > 0 and f.matches(service, action, region):
                    if f.skip > 0:
                        f.skip -= 1
                        continue
                    f.count -= 1
                    fault = f
                    break
            self.faults = [f for f in self.faults if f.count > 0]
            if fault is None and self.chaos is not None:
                fault = self.chaos.draw(service)
        if SETTINGS["latency_seconds"]:
            time.sleep(SETTINGS["latency_seconds"])
        if fault is not None and fault.after:
            # Carried out, then the answer is lost.
            captured: dict[str, Any] = {}

            def capture(status: str, headers: list, exc_info: Any = None) -> Any:
                captured["status"] = status
                return lambda data: None

            b"".join(self._serve(environ, capture, service, action, region, body))
            if fault.drop:
                self._drop(environ)
            environ["wsgi.input"] = io.BytesIO()  # moto read the body
            return self._error(environ, start_response, service, fault)
        if fault is not None and fault.hold:
            with self.lock:
                if self.held == 0:
                    self.release.clear()
                self.held += 1
            self.release.wait(timeout=120)
            with self.lock:
                self.held -= 1
            return self._serve(environ, start_response, service, action, region, body)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.drop:
                self._drop(environ)
            if not fault.delay:
                return self._error(environ, start_response, service, fault)
        return self._serve(environ, start_response, service, action, region, body)

    @staticmethod
    def _drop(environ: dict) -> None:
        """Closes the socket without an answer: the client sees a reset."""
        sock = environ.get("werkzeug.socket")
        if sock is not None:
            import socket as socket_mod

            try:
                sock.shutdown(socket_mod.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        raise ConnectionAbortedError("standin: dropped by fault injection")

    def _serve(self, environ: dict, start_response: Any, service: str, action: str,
               region: str, body: bytes | None) -> Any:
        """The request as AWS would carry it out, after any injected fault."""
        expired = expired_session(environ) or foreign_partition_key(environ, region)
        if expired is not None:
            return self._error(environ, start_response, service, expired)
        if service == "s3":
            mismatch = self._payload_sha256_mismatch(environ)
            if mismatch is not None:
                return self._error(environ, start_response, service, mismatch)
        if service == "ebs" and action == "StartSnapshot":
            body = read_body(environ)  # its Tags: checked here and by _authorize
        answer = self._authorize(environ, start_response, service, action, region, body)
        if answer is not None:
            return answer
        if service == "s3":
            foreign = self._bucket_owner_mismatch(environ, action)
            if foreign is not None:
                return self._error(environ, start_response, service, foreign)
        reserved = _reserved_tag_key(service, action, body)
        if reserved is not None:
            return self._error(environ, start_response, service, reserved)
        if service == "ec2":
            EBS.refresh()
            unseen = _not_yet_visible(environ, account_of(environ), region)
            if unseen is not None:
                return self._error(environ, start_response, service, unseen)
        if service == "ebs":
            return EBS.serve(environ, start_response, account_of(environ), region)
        if service == "rbin":
            return RBIN.serve(environ, start_response, account_of(environ), region,
                              get_partition(region or "us-east-1"))
        if service in ("sts", "iam"):
            unseen = _iam_not_yet_visible(environ, service, action, account_of(environ))
            if unseen is not None:
                return self._error(environ, start_response, service, unseen)
            return self._query_error_shape(environ, start_response)
        if service == "ssm" and action == "PutParameter":
            return self._put_image_parameter(environ, start_response, region)
        if service == "s3" and action == "CreateMultipartUpload":
            return self._create_upload(environ, start_response)
        if service == "s3" and action == "UploadPart":
            refused = self._check_part(environ)
            if refused is not None:
                return self._error(environ, start_response, service, refused)
        if service == "s3" and action == "ListMultipartUploads":
            return self._list_uploads_algorithms(environ, start_response)
        if service == "s3" and action == "ListParts":
            return self._list_parts_root(environ, start_response)
        if service == "s3" and action == "CompleteMultipartUpload":
            return self._complete_once(environ, start_response)
        return self.app(environ, start_response)

    @staticmethod
    def _bucket_owner_mismatch(environ: dict, action: str) -> Fault | None:
        """S3 User Guide, "Verifying bucket ownership with bucket owner condition": a request
        whose x-amz-expected-bucket-owner is not the account that owns the bucket fails with
        403 Access Denied; CreateBucket ignores the header. moto ignores it everywhere, and
        lets any account reach any bucket (as a bucket policy open to all would)."""
        expected = environ.get("HTTP_X_AMZ_EXPECTED_BUCKET_OWNER")
        if not expected or action == "CreateBucket":
            return None
        bucket = environ.get("PATH_INFO", "/").lstrip("/").split("/", 1)[0]
        # No such bucket: S3's own answer (404).
        if _bucket_account(bucket, expected) == expected:
            return None
        return Fault({"status": 403, "code": "AccessDenied", "message": "Access Denied"})

    def _complete_once(self, environ: dict, start_response: Any) -> list[bytes]:
        """S3 forgets an upload once it is complete: completing it again (a client retrying
        after the answer was lost) gets 404 NoSuchUpload, where moto answers success."""
        upload_id = parse_qs(environ.get("QUERY_STRING", "")).get("uploadId", [""])[0]
        with self.lock:
            done = upload_id in self.completed_uploads
        if done and SETTINGS["s3_repeat_complete"] == "ok":
            return self._completed_again(environ, start_response, upload_id)
        if not done:
            refused = self._check_complete(environ, upload_id)
            if refused is not None:
                return self._error(environ, start_response, "s3", refused)
        if done:
            return self._error(environ, start_response, "s3", Fault({
                "status": 404, "code": "NoSuchUpload",
                "message": "The specified upload does not exist. The upload ID may be invalid, "
                           "or the upload may have been aborted or completed.",
            }))

        def record(status: str, body: bytes) -> bytes:
            if status.startswith("200") and b"<Error>" not in body:
                with self.lock:
                    self.completed_uploads.add(upload_id)
                    self.completed_answers[upload_id] = body
            return body

        return self._rewritten(environ, start_response, record)

    # S3 checksums. "If the checksum value calculated by S3 matches your provided value, the
    # request is accepted. If the values don't match, the request is rejected." (S3 User
    # Guide, "Checking object integrity for data uploads in Amazon S3"; the error is BadDigest
    # in S3's error list). UploadPart's ChecksumAlgorithm: "This checksum algorithm must be
    # the same for all parts and it match the checksum value supplied in the
    # CreateMultipartUpload request." CompletedPart's ChecksumCRC32C "is present if the
    # multipart upload request was created with the CRC32C checksum algorithm"; S3 refuses a
    # completion that lacks it (aws-sdk-java-v2#6518 shows the refusal; the code is not
    # documented: InvalidRequest, as S3 answers checksum-type mismatches).

    def _create_upload(self, environ: dict, start_response: Any) -> list[bytes]:
        algorithm = environ.get("HTTP_X_AMZ_CHECKSUM_ALGORITHM")

        def record(status: str, body: bytes) -> bytes:
            m = re.search(rb"<UploadId>([^<]+)</UploadId>", body)
            if status.startswith("200") and m:
                with self.lock:
                    self.upload_algorithms[m.group(1).decode()] = (
                        algorithm.upper() if algorithm else None)
            return body

        return self._rewritten(environ, start_response, record)

    def _check_part(self, environ: dict) -> Fault | None:
        import crc32c

        query = parse_qs(environ.get("QUERY_STRING", ""))
        upload_id = query.get("uploadId", [""])[0]
        number = int(query.get("partNumber", ["0"])[0] or 0)
        given = environ.get("HTTP_X_AMZ_CHECKSUM_CRC32C")
        if "aws-chunked" in environ.get("HTTP_CONTENT_ENCODING", ""):
            return None  # a trailing checksum: not what imgpub sends, not checked here
        with self.lock:
            algorithm = self.upload_algorithms.get(upload_id)
        if (algorithm == "CRC32C") != (given is not None) and upload_id in self.upload_algorithms:
            return Fault({
                "status": 400, "code": "InvalidRequest",
                "message": "Checksum Type mismatch occurred, expected checksum Type: "
                           f"{(algorithm or 'null').lower()}, actual checksum Type: "
                           f"{'crc32c' if given else 'null'}",
            })
        if given is None:
            return None
        body = read_body(environ)
        actual = base64.b64encode(crc32c.crc32c(body).to_bytes(4, "big")).decode()
        if actual != given:
            return Fault({
                "status": 400, "code": "BadDigest",
                "message": "The CRC32C you specified did not match the calculated checksum.",
            })
        with self.lock:
            self.part_crc32c[(upload_id, number)] = actual
        return None

    def _check_complete(self, environ: dict, upload_id: str) -> Fault | None:
        with self.lock:
            algorithm = self.upload_algorithms.get(upload_id)
        if algorithm != "CRC32C":
            return None
        body = read_body(environ)
        for part in re.findall(rb"<Part>(.*?)</Part>", body, flags=re.S):
            number = int(re.search(rb"<PartNumber>(\d+)</PartNumber>", part).group(1))
            crc = re.search(rb"<ChecksumCRC32C>([^<]*)</ChecksumCRC32C>", part)
            if crc is None:
                return Fault({
                    "status": 400, "code": "InvalidRequest",
                    "message": "The upload was created using a crc32c checksum. The complete "
                               "request must include the checksum for each part. It was "
                               f"missing for part {number} in the request.",
                })
            with self.lock:
                stored = self.part_crc32c.get((upload_id, number))
            if stored is not None and crc.group(1).decode() != stored:
                return Fault({
                    "status": 400, "code": "InvalidPart",
                    "message": "One or more of the specified parts could not be found. The "
                               "part may not have been uploaded, or the specified entity tag "
                               "may not have matched the part's entity tag.",
                })
        return None

    def _list_uploads_algorithms(self, environ: dict, start_response: Any) -> list[bytes]:
        """ListMultipartUploads names each upload's ChecksumAlgorithm (S3 API reference,
        MultipartUpload); moto leaves it out."""

        def rewrite(status: str, body: bytes) -> bytes:
            def add(m: re.Match) -> bytes:
                upload = m.group(0)
                found = re.search(rb"<UploadId>([^<]+)</UploadId>", upload)
                with self.lock:
                    algorithm = self.upload_algorithms.get(found.group(1).decode()) if found else None
                if not algorithm or b"<ChecksumAlgorithm>" in upload:
                    return upload
                return upload.replace(
                    b"</Upload>", f"<ChecksumAlgorithm>{algorithm}</ChecksumAlgorithm></Upload>"
                    .encode())
            return re.sub(rb"<Upload>.*?</Upload>", add, body, flags=re.S)

        return self._rewritten(environ, start_response, rewrite)

    def _put_image_parameter(self, environ: dict, start_response: Any,
                             region: str) -> list[bytes]:
        """PutParameter with DataType aws:ec2:image. "For this data type, Parameter Store
        validates the value asynchronously." (SSM User Guide, "Parameter data types in
        Parameter Store"); "If you submit an invalid AMI value, the PutParameter operation
        will return success, but the asynchronous validation will fail and the parameter
        will not be created or updated." (PutParameter API reference, DataType). moto writes
        at once and checks nothing: here the write answers as moto does, the parameter is
        put back as it was, and the new value lands only once the AMI passes the check,
        `ssm_validation_seconds` later (unseen until then; AWS does not say what a read in
        between sees)."""
        from moto.ssm.models import ssm_backends

        body = read_body(environ)
        doc = json.loads(body or b"{}")
        if doc.get("DataType") != "aws:ec2:image":
            return self.app(environ, start_response)
        account = account_of(environ)
        backend = ssm_backends[account][region]
        name = doc.get("Name", "")
        key = backend._parameters.normalize_name(name)
        before = list(backend._parameters[key]) if key in backend._parameters else None
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list, exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        answer = b"".join(self.app(environ, capture))
        if not captured["status"].startswith("200"):
            start_response(captured["status"], captured["headers"])
            return [answer]
        written = list(backend._parameters[key])
        if before is None:
            del backend._parameters[key]
        else:
            backend._parameters[key] = before
        image_id = doc.get("Value", "")

        def validate() -> None:
            from moto.ec2.models import ec2_backends

            ami = ec2_backends[account][region].amis.get(image_id)
            ok = (ami is not None and image_id not in SETTINGS["ssm_reject_images"]
                  and getattr(ami, "state", "available") == "available")
            schedule_event("ssm-validated" if ok else "ssm-rejected", f"{region}:{name}",
                           time.monotonic())
            current = backend._parameters[key] if key in backend._parameters else []
            if ok and (not current or current[-1].version < written[-1].version):
                # The new version lands on whatever is there now (a write since stays).
                backend._parameters[key] = current + [written[-1]]

        timer = threading.Timer(float(SETTINGS["ssm_validation_seconds"]), validate)
        timer.daemon = True
        timer.start()
        start_response(captured["status"], captured["headers"])
        return [answer]

    def _completed_again(self, environ: dict, start_response: Any,
                         upload_id: str) -> list[bytes]:
        """The seed's other answer to a repeated CompleteMultipartUpload: the first answer
        again (the object is there)."""
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length:
            environ["wsgi.input"].read(length)
        with self.lock:
            body = self.completed_answers[upload_id]
        start_response("200 OK", [("Content-Type", "application/xml"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    def _authorize(self, environ: dict, start_response: Any, service: str, action: str,
                   region: str, body: bytes | None) -> list[bytes] | None:
        """With enforce_iam: a denied request's error, or SimulatePrincipalPolicy's answer;
        None lets the request through to moto."""
        simulate = service == "iam" and action == "SimulatePrincipalPolicy"
        if not (SETTINGS["enforce_iam"] or simulate or service == "ec2"):
            return None
        if body is None and (
            service in ("ssm", "kms")
            or (service == "ebs" and action == "StartSnapshot")
            or service == "rbin"
            or environ.get("CONTENT_TYPE", "").startswith("application/x-www-form")
        ):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(body)
        form: dict[str, list[str]] = parse_qs(environ.get("QUERY_STRING", ""))
        if body and environ.get("CONTENT_TYPE", "").startswith("application/x-www-form"):
            form.update(parse_qs(body.decode("utf-8", "replace")))
        headers = {
            k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")
        }
        m = re.search(r"Credential=([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
        identity = None
        if SETTINGS["enforce_iam"] and m:
            identity = identity_for_key(m.group(1), headers, region)
        if identity is not None:
            needs = needed_for(service, action, environ, form, body, region, identity.account)
            with NEEDS_LOCK:
                NEEDS_SEEN.update((f"{service}.{action}", needed, resource,
                                   tuple(sorted(context))) for needed, resource, context in needs)
            for needed, resource, context in needs:
                try:
                    decision = identity.decide(needed, resource, context)
                except EvaluatorError as e:
                    print(f"standin: evaluator refused {needed} on {resource}: {e}",
                          file=sys.stderr)
                    decision = "ImplicitlyDenied"
                if decision != "Allowed":
                    fault = denial(service, identity, needed, resource)
                    return self._error(environ, start_response, service, fault)
        if identity is not None and service == "s3" and action in ("HeadObject", "GetObject"):
            # "If the object you request doesn't exist, the error that Amazon S3 returns
            # depends on whether you also have the s3:ListBucket permission ... If you don't
            # have the s3:ListBucket permission, Amazon S3 returns an HTTP status code 403"
            # (S3 API reference, HeadObject and GetObject, Permissions).
            parts = [p for p in environ["PATH_INFO"].split("/") if p]
            if len(parts) >= 2 and not _object_exists(parts[0], "/".join(parts[1:]),
                                                      identity.account, region):
                bucket_arn = f"arn:{get_partition(region or 'us-east-1')}:s3:::{parts[0]}"
                owner = _bucket_account(parts[0], identity.account)
                context = {"aws:RequestedRegion": region, "aws:PrincipalAccount": identity.account,
                           "s3:ResourceAccount": owner, "aws:ResourceAccount": owner}
                if identity.decide("s3:ListBucket", bucket_arn, context) != "Allowed":
                    return self._error(environ, start_response, service, Fault({
                        "status": 403, "code": "AccessDenied", "message": "Access Denied"}))
        if service == "ec2" and (form.get("DryRun") or [""])[0].lower() == "true":
            # Authorized: EC2 answers that the request would have succeeded, whatever moto
            # implements of DryRun for that action.
            return self._error(environ, start_response, service, Fault({
                "status": 412, "code": "DryRunOperation",
                "message": "Request would have succeeded, but DryRun flag is set.",
            }))
        if simulate:
            status, xml = simulate_principal_policy(form)
            start_response(status, [("Content-Type", "text/xml"),
                                    ("Content-Length", str(len(xml)))])
            return [xml]
        return None

    @staticmethod
    def _payload_sha256_mismatch(environ: dict) -> Fault | None:
        """S3 hashes a signed payload and refuses one the signature does not vouch for
        (moto does not look): the error S3 answers, or None when the payload matches."""
        declared = environ.get("HTTP_X_AMZ_CONTENT_SHA256", "")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if not re.fullmatch(r"[0-9a-f]{64}", declared) or not length:
            return None
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        if hashlib.sha256(body).hexdigest() == declared:
            return None
        return Fault({
            "status": 400,
            "code": "XAmzContentSHA256Mismatch",
            "message": "The provided 'x-amz-content-sha256' header does not match what was "
                       "computed.",
        })

    def _rewritten(
        self, environ: dict, start_response: Any, rewrite: Any, content_type: str | None = None
    ) -> list[bytes]:
        """Runs moto and passes its answer through rewrite(status, body) -> body; a changed
        body gets its new length (and content_type, when given)."""
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list, exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        body = b"".join(self.app(environ, capture))
        new_body = rewrite(captured["status"], body)
        headers = captured["headers"]
        if new_body != body:
            replaced = {"content-length"} | ({"content-type"} if content_type else set())
            headers = [(k, v) for k, v in headers if k.lower() not in replaced]
            headers.append(("Content-Length", str(len(new_body))))
            if content_type:
                headers.append(("Content-Type", content_type))
        start_response(captured["status"], headers)
        return [new_body]

    def _query_error_shape(self, environ: dict, start_response: Any) -> list[bytes]:
        """moto renders its auth errors (InvalidClientTokenId, AccessDenied) for STS and
        IAM in EC2's <Errors><Error> shape, which those services' clients cannot parse;
        AWS sends <ErrorResponse><Error>."""

        def rewrite(status: str, body: bytes) -> bytes:
            if status[:1] in ("4", "5") and b"<Errors>" in body:
                return re.sub(rb"<Errors>\s*(<Error>.*?</Error>)\s*</Errors>", rb"\1", body,
                              flags=re.S)
            return body

        return self._rewritten(environ, start_response, rewrite, content_type="text/xml")

    def _list_parts_root(self, environ: dict, start_response: Any) -> list[bytes]:
        """moto names the ListParts root element ListPartsResponse; S3 (and so every
        strict client) uses ListPartsResult."""

        def rewrite(status: str, body: bytes) -> bytes:
            return body.replace(b"<ListPartsResponse", b"<ListPartsResult").replace(
                b"</ListPartsResponse>", b"</ListPartsResult>"
            )

        return self._rewritten(environ, start_response, rewrite)

    @staticmethod
    def _error(environ: dict, start_response: Any, service: str, fault: Fault) -> list[bytes]:
        reason = {500: "Internal Server Error", 503: "Service Unavailable", 400: "Bad Request",
                  403: "Forbidden", 412: "Precondition Failed",
                  429: "Too Many Requests"}.get(fault.status, "Error")
        if service == "ec2":
            body = (
                f'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error>'
                f"<Code>{fault.code}</Code><Message>{fault.message}</Message></Error></Errors>"
                f"<RequestID>standin-fault</RequestID></Response>"
            )
        elif service == "s3":
            body = (
                f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{fault.code}</Code>'
                f"<Message>{fault.message}</Message><RequestId>standin-fault</RequestId></Error>"
            )
        elif service in ("ebs", "rbin"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            if length:
                environ["wsgi.input"].read(length)
            code = "InternalServerException" if fault.code == "InternalError" else fault.code
            if service == "rbin":
                return standin_rbin.error_response(start_response, fault.status, code,
                                                   fault.message)
            return standin_ebs.error_response(start_response, fault.status, code, fault.message)
        elif environ.get("HTTP_X_AMZ_TARGET"):
            body = json.dumps({"__type": fault.code, "message": fault.message})
        else:
            body = (
                f'<ErrorResponse><Error><Type>Sender</Type><Code>{fault.code}</Code>'
                f"<Message>{fault.message}</Message></Error>"
                f"<RequestId>standin-fault</RequestId></ErrorResponse>"
            )
        # The request body must be consumed or the connection cannot be reused.
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length:
            environ["wsgi.input"].read(length)
        data = body.encode()
        content_type = (
            "application/x-amz-json-1.1" if environ.get("HTTP_X_AMZ_TARGET") else "text/xml"
        )
        start_response(
            f"{fault.status} {reason}",
            [("Content-Type", content_type), ("Content-Length", str(len(data)))],
        )
        return [data]


def make_app() -> StandinApp:
    install_patches()
    return StandinApp(DomainDispatcherApplication(create_backend_app))


def write_tls_files(directory: str, host: str) -> tuple[str, str]:
    """A throwaway CA (DIR/ca.pem, what clients trust) and a certificate for `host` it
    issued (DIR/server.pem, DIR/server.key). Returns the server's (cert, key) paths."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))

    def cert(subject, key, issuer, issuer_key, ca: bool):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid[0])
            .not_valid_after(valid[1])
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
                critical=False,
            )
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert("imgpub stand-in CA", ca_key, "imgpub stand-in CA", ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = cert(host, key, "imgpub stand-in CA", ca_key, False)
    paths = {name: os.path.join(directory, name) for name in ("ca.pem", "server.pem", "server.key")}
    with open(paths["ca.pem"], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["server.pem"], "wb") as f:
        f.write(leaf.public_bytes(serialization.Encoding.PEM))
    with open(paths["server.key"], "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return paths["server.pem"], paths["server.key"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls-dir", help="also serve HTTPS; the CA goes to DIR/ca.pem")
    args = parser.parse_args(argv)
    app = make_app()
    server = make_server(
        args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler
    )
    os.environ["MOTO_PORT"] = str(server.port)
    ready = f"PORT {server.port}"
    if args.tls_dir:
        tls = make_server(
            args.host,
            0,
            app,
            threaded=True,
            request_handler=MotoRequestHandler,
            ssl_context=write_tls_files(args.tls_dir, args.host),
        )
        threading.Thread(target=tls.serve_forever, daemon=True).start()
        ready += f" TLS_PORT {tls.port}"
    print(f"standin: seed {SEED}: " + ", ".join(
        f"{k}={SETTINGS[k]}" for k in sorted(UNDOCUMENTED)), file=sys.stderr, flush=True)
    print(ready, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
