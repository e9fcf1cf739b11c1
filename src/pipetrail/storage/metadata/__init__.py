"""The metadata store: runs, tasks, events, params, metrics, tags and lineage."""
