"""What the daemon tells its operator: audit records in the journal, metrics."""
