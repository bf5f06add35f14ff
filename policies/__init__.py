"""The gate: agent identity and permissions, risk checks, approval rules, audit log."""
