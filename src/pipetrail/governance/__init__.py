"""Governance over the record: the model registry with approvals, named tokens and roles, the
audit report, and retention (deleting runs, collecting what no run references)."""
