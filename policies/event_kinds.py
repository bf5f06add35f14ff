"""The audit kinds recorded for the event stream alone (written at their source; see docs/ARCHITECTURE.md).

Apart from policies/events.py so that the gate and the reconciler, which write these records, do not load the
event stream's code (its record and event types): only servers that serve events (webhooks, the console, the
event socket, metrics) need it, never a stdio server before its first answer (tests/server/test_startup.py).
"""

KIND_PROPOSAL = "proposal.created"
KIND_APPROVAL_REQUESTED = "proposal.awaiting_approval"
KIND_POSITION = "position.updated"
KIND_ALERT = "risk.alert"
