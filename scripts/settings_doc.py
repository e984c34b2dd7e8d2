"""docs/settings.md, printed from `common.settings.Settings`: one row per field (its variable,
default and description), so the page cannot drift from the code.

After changing a setting: `python -m scripts.settings_doc > docs/settings.md`
(tests/test_readme.py fails while the page differs from what this prints).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from common.settings import PROJECT_ROOT, Settings

PAGE = """# Settings

Everything comes from environment variables (or a `.env` file in the project root), read by
`common/settings.py`. Secrets are only read from the environment; the Dagster resources take
them through `EnvVar`, so they never appear in run config, metadata or logs. Two variables are
read outside the settings module: the emulator's `EMULATOR_LOG_CONFIG` (its logging file,
default `config/logging/emulator.yaml`, or `--log-config`; the emulator imports nothing of the
project) and compose's `DAGSTER_LOG_LEVEL` (`--log-level` of the Dagster webserver and daemon,
default `info`); see [Operations](operations.md#logging).

This page is generated from the fields of `Settings`:
`python -m scripts.settings_doc > docs/settings.md`.

<!-- settings-table -->
{table}
<!-- /settings-table -->
"""


def shown(value: object) -> str:
    """A default as a user writes it in `.env`: paths relative to the project root."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, datetime):
        value = value.isoformat().replace("+00:00", "Z")
    if isinstance(value, Path) and value.is_absolute():
        value = value.relative_to(PROJECT_ROOT)
    return f"`{str(value).replace(f'{PROJECT_ROOT}/', '')}`"


def settings_table() -> str:
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        if not field.description:
            raise ValueError(f"Settings.{name} has no description: the settings page would not say what it does")
        rows.append(f"| `{name.upper()}` | {shown(field.default)} | {field.description} |")
    return "\n".join(rows)


def settings_page() -> str:
    return PAGE.format(table=settings_table())


if __name__ == "__main__":
    print(settings_page(), end="")
