"""`pymager-admin`: the operator's commands (see pymager_tx.admin.cli)."""
