"""Dagster resources: upstream clients (HTTP, retries, error envelopes, parsing), the warehouse, the top-list knobs."""
