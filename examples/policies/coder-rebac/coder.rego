# Warden relationship example (issue #5), in Rego: writers (through their task) write at a
# risk score below 0.5, readers read, an agent on hold is denied everything. Warden fills in
# input.context.relations (the relations the principal holds on the resource) for Rego
# packages. Same decisions as `coder.cedar` on every test row.
package warden.coder_rebac

import rego.v1

default allow := false

allow if {
	not input.context.hold
	input.action == "write"
	input.resource.type == "Repository"
	"writer" in input.context.relations
	input.context.risk_score < 0.5
}

allow if {
	not input.context.hold
	input.action == "read"
	input.resource.type == "Repository"
	"reader" in input.context.relations
}
