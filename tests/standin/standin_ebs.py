"""EBS direct APIs (StartSnapshot, PutSnapshotBlock, CompleteSnapshot, ListSnapshotBlocks,
GetSnapshotBlock) as the service behaves, where moto's are not faithful: moto takes 512-byte
blocks, never checks a checksum, a data length or ChangedBlocksCount, ignores ClientToken
and Timeout, accepts blocks past the volume's end and after completion, answers 500 for an
unknown snapshot and makes every snapshot `completed` at once.

The snapshots are moto's EC2 snapshots (so DescribeSnapshots, RegisterImage and tags see
them), held `pending` until CompleteSnapshot and then for `ebs_complete_seconds` more; one
not completed within its Timeout turns `error`. A pending snapshot cannot be read
(ListSnapshotBlocks, GetSnapshotBlock, ListChangedBlocks): "Can a snapshot be accessed using
the EBS direct APIs if it has a pending status? No." (Amazon EBS FAQs, EBS direct APIs).

A snapshot started with ParentSnapshotId is an incremental snapshot of it: it holds the
blocks written to it, and reads every other block through its parent ("Subsequent snapshots
... are incremental snapshots. They include only changed and new data blocks written to the
volume since the last snapshot" — EBS User Guide, "How Amazon EBS snapshots work"). Its
ChangedBlocksCount and checksum count the blocks written to it ("The number of blocks that
were written to the snapshot" — CompleteSnapshot API reference). A child keeps its parent's
blocks when the parent is deleted (only data no other snapshot needs goes).
GET /_standin/ebs/storage reports the blocks each snapshot owns (what it is billed for)."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qs

BLOCK_SIZE = 524288
GIB = 1 << 30
# StartSnapshot's limits (API reference): VolumeSize in GiB, Timeout in minutes.
MAX_VOLUME_GIB = 65536
TIMEOUT_MINUTES = (10, 4320)
DEFAULT_TIMEOUT_MINUTES = 60


def default_ebs_key(backend: Any) -> str:
    """The account's default EBS key in that region (moto makes it on first use)."""
    if not backend.default_kms_key_id:
        backend._create_default_encryption_key()
    return backend.default_kms_key_id


class EbsError(Exception):
    """An error the service answers: HTTP status, code, message, reason."""

    def __init__(self, status: int, code: str, message: str, reason: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.reason = status, code, message, reason


def _validation(message: str, reason: str) -> EbsError:
    return EbsError(400, "ValidationException", message, reason)


@dataclass
class Snapshot:
    snapshot_id: str
    account: str
    region: str
    volume_size: int
    timeout_minutes: int
    started: float
    ec2: Any  # moto's EC2 Snapshot
    # Block index -> (data, raw SHA-256 digest).
    blocks: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    completes_at: float | None = None
    # Every block token handed out, to tell a made-up one (GetSnapshotBlock needs one).
    tokens: set[str] = field(default_factory=set)
    # The snapshot named by ParentSnapshotId, kept whole even once deleted through EC2.
    parent: "Snapshot | None" = None

    def resolved(self) -> dict[int, tuple[bytes, bytes]]:
        """Every block a read sees: the parent's, overlaid with the blocks written here."""
        out = self.parent.resolved() if self.parent is not None else {}
        out.update(self.blocks)
        return out

    def status(self, now: float) -> str:
        if self.completes_at is not None:
            return "completed" if now >= self.completes_at else "pending"
        if now > self.started + self.timeout_minutes * 60:
            return "error"
        return "pending"

    def block_count(self) -> int:
        return self.volume_size * GIB // BLOCK_SIZE


class EbsDirect:
    def __init__(self, settings: dict[str, Any]):
        self.settings = settings
        self.lock = threading.Lock()
        self.snapshots: dict[str, Snapshot] = {}
        # (account, region, ClientToken) -> (request parameters, snapshot id).
        self.tokens: dict[tuple[str, str, str], tuple[dict, str]] = {}

    def refresh(self) -> None:
        """Brings moto's EC2 view of each snapshot to its state now (DescribeSnapshots)."""
        now = time.monotonic()
        with self.lock:
            for snap in self.snapshots.values():
                snap.ec2.status = snap.status(now)

    def expire(self) -> list[str]:
        """Ends every pending snapshot not yet completed as if its Timeout had passed
        (POST /_standin/ebs/expire): what a snapshot left for too long becomes."""
        with self.lock:
            expired = [s for s in self.snapshots.values()
                       if s.completes_at is None and s.status(time.monotonic()) == "pending"]
            for snap in expired:
                snap.started -= snap.timeout_minutes * 60 + 1
                snap.ec2.status = "error"
            return [s.snapshot_id for s in expired]

    def _snapshot(self, account: str, region: str, snapshot_id: str) -> Snapshot:
        from moto.ec2.models import ec2_backends

        snap = self.snapshots.get(snapshot_id)
        if snap is not None and snapshot_id not in ec2_backends[account][region].snapshots:
            snap = None  # deleted through EC2's DeleteSnapshot
        if snap is None or snap.account != account or snap.region != region:
            raise EbsError(404, "ResourceNotFoundException",
                           f"The snapshot '{snapshot_id}' does not exist.", "SNAPSHOT_NOT_FOUND")
        return snap

    def _readable(self, snap: Snapshot) -> None:
        """Reads need a completed snapshot (Amazon EBS FAQs, EBS direct APIs: "Can a snapshot
        be accessed using the EBS direct APIs if it has a pending status? No."). The error
        is not documented; ValidationException is what the API reference lists for a
        snapshot the request cannot use."""
        status = snap.status(time.monotonic())
        if status != "completed":
            raise _validation(
                f"The snapshot '{snap.snapshot_id}' is {status}; only completed snapshots "
                "can be read.", "INVALID_SNAPSHOT_ID")

    def _pending(self, snap: Snapshot) -> None:
        status = snap.status(time.monotonic())
        if status != "pending" or snap.completes_at is not None:
            raise _validation(
                f"The snapshot '{snap.snapshot_id}' is not in a pending state ({status}).",
                "INVALID_SNAPSHOT_ID" if status != "error" else "WRITE_REQUEST_TIMEOUT",
            )

    # ---------------------------------------------------------------------------------------
    # Operations.

    def start_snapshot(self, account: str, region: str, doc: dict) -> dict:
        from moto.ec2.models import ec2_backends

        size = doc.get("VolumeSize")
        if not isinstance(size, int) or not 1 <= size <= MAX_VOLUME_GIB:
            raise _validation(f"VolumeSize must be 1 to {MAX_VOLUME_GIB} GiB.",
                              "INVALID_VOLUME_SIZE")
        timeout = doc.get("Timeout", DEFAULT_TIMEOUT_MINUTES)
        if not isinstance(timeout, int) or not TIMEOUT_MINUTES[0] <= timeout <= TIMEOUT_MINUTES[1]:
            raise _validation("Timeout must be 10 to 4320 minutes.", "INVALID_PARAMETER_VALUE")
        if doc.get("KmsKeyArn") and not doc.get("Encrypted"):
            raise _validation("KmsKeyArn needs Encrypted set to true.", "INVALID_CUSTOMER_KEY")
        parent_id = doc.get("ParentSnapshotId")
        if parent_id and "Encrypted" in doc:
            # StartSnapshot API reference: "You can't specify ParentSnapshotId and Encrypted
            # in the same request. If you specify both parameters, the request fails with
            # ValidationException."
            raise _validation("ParentSnapshotId and Encrypted cannot both be given.",
                              "INVALID_PARAMETER_VALUE")
        token = doc.get("ClientToken")
        params = {k: v for k, v in doc.items() if k != "ClientToken"}
        with self.lock:
            if token is not None:
                seen = self.tokens.get((account, region, token))
                if seen is not None:
                    if seen[0] != params:
                        # EBS API reference, StartSnapshot errors: "ConflictException: The
                        # request uses the same client token as a previous, but non-identical
                        # request." (HTTP 503).
                        raise EbsError(503, "ConflictException",
                                       "The request uses the same client token as a previous, "
                                       "but non-identical request.")
                    return self._describe(self.snapshots[seen[1]])
            backend = ec2_backends[account][region]
            parent = None
            if parent_id:
                parent = self._snapshot(account, region, parent_id)
                # Undocumented, so seeded (docs/testing.md): a pending parent, or a smaller
                # volume than the parent's, is refused (the FAQ's rule for reads, "The
                # snapshot can be accessed only if it has a completed status", and a volume
                # that cannot shrink), or taken (the child reads through the parent, up to
                # its own size).
                if self.settings["ebs_parent_pending"] == "refused":
                    self._readable(parent)
                if size < parent.volume_size and self.settings["ebs_parent_larger"] == "refused":
                    raise _validation(
                        f"VolumeSize {size} is smaller than the parent snapshot's "
                        f"{parent.volume_size} GiB.", "INVALID_VOLUME_SIZE")
                # EBS User Guide, "Encryption outcomes for EBS direct APIs": "If Amazon EBS
                # encryption by default is enabled on your AWS account, you cannot start a
                # new snapshot using an unencrypted parent snapshot"; an encrypted parent's
                # child "is encrypted using the same KMS key as the parent snapshot".
                if not parent.ec2.encrypted and backend.ebs_encryption_by_default:
                    raise _validation(
                        "Encryption by default is enabled: the parent snapshot "
                        f"{parent_id} is unencrypted.", "INVALID_PARAMETER_VALUE")
            volume = backend.create_volume(size=size, zone_name=f"{region}a")
            ec2 = backend.create_snapshot(volume_id=volume.id,
                                          description=doc.get("Description") or "")
            # The volume was only moto's way to a snapshot; AWS has none.
            backend.volumes.pop(volume.id, None)
            tags = doc.get("Tags") or []
            if tags:
                ec2.add_tags({t["Key"]: t["Value"] for t in tags})
            # "If Amazon EBS encryption by default is enabled on your AWS account, you can't
            # create unencrypted snapshots." (EBS User Guide, "Encryption outcomes for EBS
            # direct APIs"): encrypted with the default key unless the request names one.
            if parent is not None:
                ec2.encrypted = bool(parent.ec2.encrypted)
                if ec2.encrypted:
                    ec2.kms_key_id = parent.ec2.kms_key_id
            elif doc.get("Encrypted") or backend.ebs_encryption_by_default:
                ec2.encrypted = True
                ec2.kms_key_id = doc.get("KmsKeyArn") or default_ebs_key(backend)
            snap = Snapshot(ec2.id, account, region, size, timeout, time.monotonic(), ec2,
                            parent=parent)
            ec2.status = "pending"
            self.snapshots[snap.snapshot_id] = snap
            if token is not None:
                self.tokens[(account, region, token)] = (params, snap.snapshot_id)
            return self._describe(snap)

    def storage(self) -> dict[str, dict]:
        """What each snapshot stores: the blocks written to it, not those it reads through
        its parent (GET /_standin/ebs/storage)."""
        with self.lock:
            return {s.snapshot_id: {
                "owned_blocks": len(s.blocks),
                "owned_bytes": len(s.blocks) * BLOCK_SIZE,
                "parent": s.parent.snapshot_id if s.parent is not None else None,
            } for s in self.snapshots.values()}

    def _describe(self, snap: Snapshot) -> dict:
        out = {
            "SnapshotId": snap.snapshot_id,
            "OwnerId": snap.account,
            "Status": snap.status(time.monotonic()),
            "StartTime": snap.ec2.start_time.timestamp()
            if hasattr(snap.ec2.start_time, "timestamp") else time.time(),
            "VolumeSize": snap.volume_size,
            "BlockSize": BLOCK_SIZE,
            "Tags": [{"Key": t["key"], "Value": t["value"]} for t in snap.ec2.get_tags()],
            "Description": snap.ec2.description,
        }
        if snap.ec2.encrypted:
            out["KmsKeyArn"] = snap.ec2.kms_key_id
        return out

    def put_block(self, account: str, region: str, snapshot_id: str, index: str,
                  headers: dict[str, str], body: bytes) -> tuple[dict[str, str], dict]:
        with self.lock:
            snap = self._snapshot(account, region, snapshot_id)
            self._pending(snap)
            if not index.isdigit() or int(index) >= snap.block_count():
                raise _validation(
                    f"The block index {index} is past the end of the {snap.volume_size} GiB "
                    "volume.", "INVALID_BLOCK")
            length = headers.get("x-amz-data-length", "")
            if not length.isdigit() or int(length) != BLOCK_SIZE:
                raise _validation(f"DataLength must be {BLOCK_SIZE}.", "INVALID_PARAMETER_VALUE")
            if len(body) != int(length):
                raise _validation("The block's length is not its DataLength.",
                                  "INVALID_PARAMETER_VALUE")
            if headers.get("x-amz-checksum-algorithm") != "SHA256":
                raise _validation("ChecksumAlgorithm must be SHA256.", "INVALID_PARAMETER_VALUE")
            digest = hashlib.sha256(body).digest()
            if headers.get("x-amz-checksum") != base64.b64encode(digest).decode():
                raise _validation("The checksum does not match the block's data.",
                                  "INVALID_PARAMETER_VALUE")
            snap.blocks[int(index)] = (body, digest)
        checksum = base64.b64encode(digest).decode()
        return {"x-amz-Checksum": checksum, "x-amz-Checksum-Algorithm": "SHA256"}, {}

    def complete(self, account: str, region: str, snapshot_id: str,
                 headers: dict[str, str]) -> dict:
        with self.lock:
            snap = self._snapshot(account, region, snapshot_id)
            if snap.completes_at is not None and self.settings["ebs_repeat_complete"] == "accepted":
                # A repeated CompleteSnapshot: AWS documents no answer. One plausible one is
                # the snapshot's status, as for the first; the other ("refused") is
                # _pending's ValidationException. The seed picks (docs/testing.md).
                return {"Status": snap.status(time.monotonic())}
            self._pending(snap)
            count = headers.get("x-amz-changedblockscount", "")
            if not count.isdigit():
                raise _validation("ChangedBlocksCount is required.", "INVALID_PARAMETER_VALUE")
            if int(count) != len(snap.blocks):
                raise _validation(
                    f"ChangedBlocksCount is {count}, but {len(snap.blocks)} blocks were "
                    "written.", "INVALID_PARAMETER_VALUE")
            checksum = headers.get("x-amz-checksum")
            if checksum is not None:
                if (headers.get("x-amz-checksum-algorithm") != "SHA256"
                        or headers.get("x-amz-checksum-aggregation-method") != "LINEAR"):
                    raise _validation("The aggregate checksum must be SHA256, LINEAR.",
                                      "INVALID_PARAMETER_VALUE")
                linear = hashlib.sha256(
                    b"".join(snap.blocks[i][1] for i in sorted(snap.blocks))).digest()
                if checksum != base64.b64encode(linear).decode():
                    raise _validation("The aggregate checksum does not match the blocks "
                                      "written.", "INVALID_PARAMETER_VALUE")
            snap.completes_at = time.monotonic() + float(self.settings["ebs_complete_seconds"])
            snap.ec2.status = snap.status(time.monotonic())
            return {"Status": snap.ec2.status}

    def list_blocks(self, account: str, region: str, snapshot_id: str,
                    query: dict[str, list[str]]) -> dict:
        first = lambda name, default: (query.get(name) or [default])[0]  # noqa: E731
        with self.lock:
            snap = self._snapshot(account, region, snapshot_id)
            self._readable(snap)
            max_results = int(first("maxResults", "10000"))
            if not 100 <= max_results <= 10000:
                raise _validation("MaxResults must be 100 to 10000.", "INVALID_PARAMETER_VALUE")
            start = int(first("pageToken", first("startingBlockIndex", "0")))
            blocks_now = snap.resolved()
            indexes = [i for i in sorted(blocks_now) if i >= start]
            page, rest = indexes[:max_results], indexes[max_results:]
            blocks = []
            for i in page:
                token = base64.b64encode(hashlib.sha256(
                    f"{snapshot_id}/{i}/{blocks_now[i][1].hex()}".encode()).digest()).decode()
                snap.tokens.add(token)
                blocks.append({"BlockIndex": i, "BlockToken": token})
            out = {"Blocks": blocks, "VolumeSize": snap.volume_size, "BlockSize": BLOCK_SIZE,
                   "ExpiryTime": time.time() + 3600}
            if rest:
                out["NextToken"] = str(rest[0])
            return out

    def get_block(self, account: str, region: str, snapshot_id: str, index: str,
                  query: dict[str, list[str]]) -> tuple[dict[str, str], bytes]:
        with self.lock:
            snap = self._snapshot(account, region, snapshot_id)
            self._readable(snap)
            token = (query.get("blockToken") or [""])[0]
            blocks_now = snap.resolved()
            if not index.isdigit() or int(index) not in blocks_now or token not in snap.tokens:
                raise _validation("The block token is not valid for this block.",
                                  "INVALID_BLOCK_TOKEN")
            data, digest = blocks_now[int(index)]
        return {
            "x-amz-Data-Length": str(len(data)),
            "x-amz-Checksum": base64.b64encode(digest).decode(),
            "x-amz-Checksum-Algorithm": "SHA256",
            "Content-Type": "application/octet-stream",
        }, data

    # ---------------------------------------------------------------------------------------
    # HTTP.

    @staticmethod
    def action(method: str, path: str) -> str:
        parts = [p for p in path.split("/") if p]
        if parts == ["snapshots"] and method == "POST":
            return "StartSnapshot"
        if len(parts) == 3 and parts[:2] == ["snapshots", "completion"] and method == "POST":
            return "CompleteSnapshot"
        if len(parts) == 3 and parts[0] == "snapshots" and parts[2] == "blocks":
            return "ListSnapshotBlocks"
        if len(parts) == 4 and parts[0] == "snapshots" and parts[2] == "blocks":
            return "PutSnapshotBlock" if method == "PUT" else "GetSnapshotBlock"
        if len(parts) == 3 and parts[0] == "snapshots" and parts[2] == "changedblocks":
            return "ListChangedBlocks"
        return f"{method} {path}"

    @staticmethod
    def snapshot_of(path: str) -> str | None:
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 3 and parts[1] == "completion":
            return parts[2]
        return parts[1] if len(parts) >= 2 else None

    def serve(self, environ: dict, start_response: Callable, account: str,
              region: str) -> list[bytes]:
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items()
                   if k.startswith("HTTP_")}
        query = parse_qs(environ.get("QUERY_STRING", ""))
        parts = [p for p in path.split("/") if p]
        action = self.action(method, path)
        try:
            out_headers: dict[str, str] = {}
            if action == "StartSnapshot":
                status, answer = "201 Created", self.start_snapshot(
                    account, region, json.loads(body or b"{}"))
            elif action == "PutSnapshotBlock":
                out_headers, answer = self.put_block(account, region, parts[1], parts[3],
                                                     headers, body)
                status = "201 Created"
            elif action == "CompleteSnapshot":
                status, answer = "202 Accepted", self.complete(account, region, parts[2],
                                                               headers)
            elif action == "ListSnapshotBlocks":
                status, answer = "200 OK", self.list_blocks(account, region, parts[1], query)
            elif action == "GetSnapshotBlock":
                out_headers, data = self.get_block(account, region, parts[1], parts[3], query)
                start_response("200 OK", [*out_headers.items(),
                                          ("Content-Length", str(len(data)))])
                return [data]
            else:
                raise EbsError(400, "ValidationException", f"{action} is not served here",
                               "INVALID_PARAMETER_VALUE")
        except EbsError as e:
            return error_response(start_response, e.status, e.code, e.message, e.reason)
        data = json.dumps(answer).encode()
        start_response(status, [*out_headers.items(), ("Content-Type", "application/json"),
                                ("Content-Length", str(len(data)))])
        return [data]


def error_response(start_response: Callable, status: int, code: str, message: str,
                   reason: str | None = None) -> list[bytes]:
    """An EBS (restJson1) error: the code in x-amzn-ErrorType and the body."""
    doc: dict[str, Any] = {"message": message}
    if reason:
        doc["Reason"] = reason
    data = json.dumps(doc).encode()
    phrase = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 429: "Too Many Requests",
              500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "Error")
    start_response(f"{status} {phrase}", [
        ("Content-Type", "application/json"), ("x-amzn-ErrorType", code),
        ("Content-Length", str(len(data)))])
    return [data]
