"""Pure domain: records, statuses, the DAG, ids and hashing. No I/O."""
