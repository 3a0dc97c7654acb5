// The stand-in's IAM decisions, made by a maintained evaluator (@cloud-copilot/iam-simulate):
// one JSON request per line on stdin, one JSON answer per line on stdout.
//
// Request: {"principal": ARN, "account": ID, "action": "ec2:RegisterImage",
//           "resource": ARN or "*", "context": {"aws:RequestedRegion": "eu-west-1", ...},
//           "identityPolicies": [doc, ...], "boundaries": [doc, ...],
//           "resourcePolicy": doc (a KMS key's key policy; optional)}
// Answer:  {"decision": "Allowed" | "ImplicitlyDenied" | "ExplicitlyDenied"}
//          or {"error": "..."} when the evaluator refused the input.
import { createInterface } from 'node:readline'
import { runSimulation } from '@cloud-copilot/iam-simulate'

const named = (docs, prefix) => docs.map((policy, i) => ({ name: `${prefix}${i}`, policy }))

async function decide(req) {
  const simulation = {
    request: {
      principal: req.principal,
      action: req.action,
      resource: { resource: req.resource, accountId: req.account },
      contextVariables: req.context || {},
    },
    identityPolicies: named(req.identityPolicies || [], 'identity'),
    serviceControlPolicies: [],
    resourceControlPolicies: [],
  }
  if (req.resourcePolicy) {
    simulation.resourcePolicy = req.resourcePolicy
  }
  if (req.boundaries && req.boundaries.length) {
    simulation.permissionBoundaryPolicies = named(req.boundaries, 'boundary')
  }
  const result = await runSimulation(simulation, {})
  if (result.resultType === 'error') {
    return { error: result.errors.message || JSON.stringify(result.errors) }
  }
  return { decision: result.overallResult }
}

const lines = createInterface({ input: process.stdin })
for await (const line of lines) {
  let answer
  try {
    answer = await decide(JSON.parse(line))
  } catch (e) {
    answer = { error: String(e && e.message ? e.message : e) }
  }
  process.stdout.write(JSON.stringify(answer) + '\n')
}
