"""The HTTP service: serves stored top-list snapshots as JSON or CSV; imports the warehouse, never Dagster."""
