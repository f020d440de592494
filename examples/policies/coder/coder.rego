# Warden seed example (issue #4), in Rego: the Coder agent may write a repository only
# while its current task is `patch_bug` and its risk score is below 0.5; an agent on hold
# is denied everything; everything else is denied by default (including the Coder reading a
# repository). Same decisions as `coder.cedar` on every test row.
#
# Input: {"principal": SPIFFE ID, "action": "...", "resource": {"type", "id"},
#         "context": {"agent", "task"?, "risk_score", "hold", "delegation", "time", "request"}}
# Entry point: data.warden.coder.allow (the default for this package).
package warden.coder

import rego.v1

default allow := false

coder := "spiffe://example.org/agent/coder"

allow if {
	not input.context.hold
	input.principal == coder
	input.action == "write"
	input.resource.type == "Repository"
	input.context.task.type == "patch_bug"
	input.context.risk_score < 0.5
}
