"""The Dagster code location: minute-partitioned upstream assets, the merged top list, schedules and sensors.

`crypto_pipeline.definitions` assembles it; `dagster dev -m crypto_pipeline.definitions` loads it.
"""
