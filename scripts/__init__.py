"""Developer commands: `make run` (`scripts.run_stack`), the OpenAPI export, the documentation build."""
