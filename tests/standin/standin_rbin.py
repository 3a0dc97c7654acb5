"""The Recycle Bin (moto has none): retention rules (the rbin service: CreateRule, ListRules,
GetRule, UpdateRule, DeleteRule) and what they retain. An AMI deregistered, or a snapshot
deleted, while a rule of its resource type matches it goes to the bin for the rule's
retention period instead of away; EC2's ListImagesInRecycleBin, ListSnapshotsInRecycleBin,
RestoreImageFromRecycleBin and RestoreSnapshotFromRecycleBin see and bring back what is
there (Recycle Bin User Guide; rbin and EC2 API references).

The EC2 side (DeregisterImage, DeleteSnapshot and the four EC2 actions) is wired in
imgpub_standin.py; this module holds the rules and the bin. POST /_standin/rbin/elapse
{"days": N} moves the bin's clock: entries age N days (retention is days long)."""

from __future__ import annotations

import datetime
import json
import threading
import time
import uuid
from urllib.parse import unquote
from dataclasses import dataclass, field
from typing import Any, Callable

# "RetentionPeriodValue ... Valid Range: Minimum value of 1. Maximum value of 365."
# "RetentionPeriodUnit ... Currently, only DAYS is supported." (Recycle Bin API Reference,
# RetentionPeriod).
RETENTION_DAYS = (1, 365)
RESOURCE_TYPES = ("EBS_SNAPSHOT", "EC2_IMAGE", "EBS_VOLUME")


class RbinError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _validation(message: str) -> RbinError:
    # ValidationException: 400 (Recycle Bin API Reference, Common errors).
    return RbinError(400, "ValidationException", message)


@dataclass
class Rule:
    identifier: str
    arn: str
    resource_type: str
    retention_days: int
    description: str | None
    resource_tags: list[dict[str, str]]
    exclude_tags: list[dict[str, str]]
    tags: list[dict[str, str]]
    # When it turns available: "When you create your first retention rule, it can take up to
    # 30 minutes for the rule to become active" (Recycle Bin User Guide); a setting here.
    available_at: float = 0.0

    def status(self) -> str:
        return "available" if time.time() >= self.available_at else "pending"

    def doc(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Identifier": self.identifier,
            "RuleArn": self.arn,
            "ResourceType": self.resource_type,
            "RetentionPeriod": {"RetentionPeriodValue": self.retention_days,
                                "RetentionPeriodUnit": "DAYS"},
            "Status": self.status(),
            "LockState": "unlocked",
            "ResourceTags": self.resource_tags,
        }
        if self.exclude_tags:
            out["ExcludeResourceTags"] = self.exclude_tags
        if self.description is not None:
            out["Description"] = self.description
        return out

    def matches(self, tags: dict[str, str]) -> bool:
        """"Tag-level retention rules ... retain only resources that have at least one of
        the tag key and value pairs specified"; a rule with no resource tags is a
        Region-level rule, for every resource of its type in the Region except those with
        an exclusion tag (Recycle Bin User Guide, "Create a retention rule"). A tag without
        a value matches any value."""
        def hit(pairs: list[dict[str, str]]) -> bool:
            return any(p["ResourceTagKey"] in tags and (
                p.get("ResourceTagValue") in (None, tags[p["ResourceTagKey"]]))
                for p in pairs)
        if self.resource_tags:
            return hit(self.resource_tags)
        return not hit(self.exclude_tags)


@dataclass
class Binned:
    """A deleted resource in the bin: moto's object, kept to be put back."""
    obj: Any
    entered: datetime.datetime
    leaves: datetime.datetime
    # An AMI's launch permissions when it was deleted: "If an AMI is shared when it is
    # deleted, it is automatically unshared when it is sent to the Recycle Bin. If you
    # restore the AMI, all of the previous sharing permissions are automatically restored."
    shared: list[dict[str, str]] = field(default_factory=list)


@dataclass
class RecycleBin:
    settings: dict[str, Any]
    lock: threading.Lock = field(default_factory=threading.Lock)
    rules: dict[tuple[str, str], dict[str, Rule]] = field(default_factory=dict)
    images: dict[tuple[str, str], dict[str, Binned]] = field(default_factory=dict)
    snapshots: dict[tuple[str, str], dict[str, Binned]] = field(default_factory=dict)
    # How far the bin's clock is ahead of the wall clock (POST /_standin/rbin/elapse).
    offset: datetime.timedelta = datetime.timedelta(0)

    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.timezone.utc) + self.offset

    def reset(self) -> None:
        with self.lock:
            self.rules.clear()
            self.images.clear()
            self.snapshots.clear()
            self.offset = datetime.timedelta(0)

    def elapse(self, days: float) -> None:
        with self.lock:
            self.offset += datetime.timedelta(days=days)

    # --- the rbin service (restJson1) ----------------------------------------------------

    @staticmethod
    def action(method: str, path: str) -> str:
        parts = [p for p in path.split("/") if p]
        if parts == ["rules"] and method == "POST":
            return "CreateRule"
        if parts == ["list-rules"] and method == "POST":
            return "ListRules"
        if len(parts) == 2 and parts[0] == "rules":
            return {"GET": "GetRule", "PATCH": "UpdateRule", "DELETE": "DeleteRule"}.get(
                method, f"{method} {path}")
        if len(parts) >= 2 and parts[0] == "tags":  # /tags/{ARN}, its slashes unescaped
            return {"POST": "TagResource", "GET": "ListTagsForResource"}.get(
                method, f"{method} {path}")
        return f"{method} {path}"

    @staticmethod
    def rule_of(path: str) -> str | None:
        """The rule a path names: /rules/{id}, or /tags/{rule ARN} (URL-encoded)."""
        parts = [p for p in path.split("/") if p]
        if len(parts) == 2 and parts[0] == "rules":
            return parts[1]
        if len(parts) >= 2 and parts[0] == "tags":
            return unquote("/".join(parts[1:])).rsplit("/", 1)[-1]
        return None

    def serve(self, environ: dict, start_response: Callable, account: str, region: str,
              partition: str) -> list[bytes]:
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length) or b"{}") if length else {}
        action = self.action(method, path)
        try:
            with self.lock:
                rules = self.rules.setdefault((account, region), {})
                if action == "CreateRule":
                    status, answer = "201 Created", self._create(rules, body, account, region,
                                                                  partition)
                elif action == "ListRules":
                    status, answer = "200 OK", self._list(rules, body)
                elif action in ("GetRule", "UpdateRule", "DeleteRule", "ListTagsForResource",
                                "TagResource"):
                    ident = self.rule_of(path) or ""
                    rule = rules.get(ident)
                    if rule is None:
                        # ResourceNotFoundException: 404 (API Reference, GetRule errors).
                        raise RbinError(404, "ResourceNotFoundException",
                                        f"Rule {ident} does not exist")
                    if action == "GetRule":
                        status, answer = "200 OK", rule.doc()
                    elif action == "ListTagsForResource":
                        status, answer = "200 OK", {"Tags": rule.tags}
                    elif action == "TagResource":
                        added = {t["Key"]: t["Value"] for t in body.get("Tags") or []}
                        rule.tags = [t for t in rule.tags if t["Key"] not in added] + [
                            {"Key": k, "Value": v} for k, v in added.items()]
                        status, answer = "201 Created", {}
                    elif action == "DeleteRule":
                        del rules[ident]
                        status, answer = "204 No Content", None
                    else:
                        self._update(rule, body)
                        status, answer = "200 OK", rule.doc()
                else:
                    raise RbinError(400, "ValidationException", f"unsupported: {action}")
        except RbinError as e:
            return error_response(start_response, e.status, e.code, e.message)
        data = b"" if answer is None else json.dumps(answer).encode()
        start_response(status, [("Content-Type", "application/json"),
                                ("Content-Length", str(len(data)))])
        return [data]

    @staticmethod
    def _retention(body: dict) -> int:
        period = body.get("RetentionPeriod") or {}
        value, unit = period.get("RetentionPeriodValue"), period.get("RetentionPeriodUnit")
        if unit != "DAYS" or not isinstance(value, int) or not (
            RETENTION_DAYS[0] <= value <= RETENTION_DAYS[1]
        ):
            raise _validation(f"RetentionPeriod must be {RETENTION_DAYS[0]} to "
                              f"{RETENTION_DAYS[1]} DAYS")
        return value

    def _create(self, rules: dict[str, Rule], body: dict, account: str, region: str,
                partition: str) -> dict:
        kind = body.get("ResourceType")
        if kind not in RESOURCE_TYPES:
            raise _validation(f"ResourceType must be one of {', '.join(RESOURCE_TYPES)}")
        resource_tags = body.get("ResourceTags") or []
        exclude = body.get("ExcludeResourceTags") or []
        # "You can't specify exclusion tags for tag-level retention rules" (API Reference,
        # CreateRule: ExcludeResourceTags).
        if resource_tags and exclude:
            raise _validation("ExcludeResourceTags is for Region-level rules only")
        ident = uuid.uuid4().hex[:11]
        rule = Rule(ident, f"arn:{partition}:rbin:{region}:{account}:rule/{ident}", kind,
                    self._retention(body), body.get("Description"), resource_tags, exclude,
                    body.get("Tags") or [])
        # Only the account's first rule in a Region is said to take a while.
        if not rules:
            rule.available_at = time.time() + float(self.settings["rbin_rule_pending_seconds"])
        rules[ident] = rule
        return rule.doc()

    def _update(self, rule: Rule, body: dict) -> None:
        if "RetentionPeriod" in body:
            rule.retention_days = self._retention(body)
        if "Description" in body:
            rule.description = body["Description"]
        if "ResourceTags" in body:
            rule.resource_tags = body["ResourceTags"] or []

    @staticmethod
    def _list(rules: dict[str, Rule], body: dict) -> dict:
        # "ResourceType ... Required: Yes" (API Reference, ListRules).
        kind = body.get("ResourceType")
        if kind not in RESOURCE_TYPES:
            raise _validation("ResourceType is required")
        wanted = body.get("ResourceTags") or []
        out = []
        for rule in rules.values():
            if rule.resource_type != kind:
                continue
            if wanted and not all(w in rule.resource_tags for w in wanted):
                continue
            doc = rule.doc()
            out.append({k: doc[k] for k in ("Identifier", "Description", "RetentionPeriod",
                                            "LockState", "RuleArn") if k in doc})
        return {"Rules": out}

    # --- what the EC2 side asks ------------------------------------------------------------

    def retention(self, account: str, region: str, kind: str,
                  tags: dict[str, str]) -> datetime.timedelta | None:
        """How long a resource deleted now stays in the bin, or None when no rule retains
        it. "If a resource matches more than one retention rule upon deletion, then the
        retention rule with the longest retention period takes precedence"; "Only retention
        rules that are in the available state retain resources" (Recycle Bin User Guide;
        API Reference, RuleStatus)."""
        with self.lock:
            days = [r.retention_days for r in self.rules.get((account, region), {}).values()
                    if r.resource_type == kind and r.status() == "available"
                    and r.matches(tags)]
        return datetime.timedelta(days=max(days)) if days else None

    def put(self, shelf: dict, account: str, region: str, rid: str, obj: Any,
            keep: datetime.timedelta, shared: list[dict[str, str]] | None = None) -> None:
        with self.lock:
            now = self.now()
            shelf.setdefault((account, region), {})[rid] = Binned(obj, now, now + keep,
                                                                  shared or [])

    def held(self, shelf: dict, account: str, region: str) -> dict[str, Binned]:
        """The shelf's entries whose retention has not run out: the rest are gone for good
        ("When the retention period expires, the resource is permanently deleted")."""
        with self.lock:
            now = self.now()
            entries = shelf.setdefault((account, region), {})
            for rid in [r for r, b in entries.items() if b.leaves <= now]:
                del entries[rid]
            return dict(entries)

    def take(self, shelf: dict, account: str, region: str, rid: str) -> Binned | None:
        self.held(shelf, account, region)
        with self.lock:
            return shelf.setdefault((account, region), {}).pop(rid, None)


def error_response(start_response: Callable, status: int, code: str,
                   message: str) -> list[bytes]:
    """An rbin (restJson1) error: the code in x-amzn-ErrorType and the body."""
    data = json.dumps({"Message": message}).encode()
    phrase = {400: "Bad Request", 403: "Forbidden", 404: "Not Found",
              429: "Too Many Requests", 500: "Internal Server Error",
              503: "Service Unavailable"}.get(status, "Error")
    start_response(f"{status} {phrase}", [
        ("Content-Type", "application/json"), ("x-amzn-ErrorType", code),
        ("Content-Length", str(len(data)))])
    return [data]


def iso(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")

