"""A code location for tests/test_launcher.py: one job whose run lasts until it is killed."""

import time

import dagster as dg


@dg.op
def wait_a_while() -> None:
    time.sleep(300)


@dg.job
def long_run() -> None:
    wait_a_while()


defs = dg.Definitions(jobs=[long_run])
