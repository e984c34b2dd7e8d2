"""The README and docs/ as a new user meets them: every console command run as written, against
the emulator on SQLite, every relative link leading to a page and heading that exist, and the
settings page equal to what `scripts.settings_doc` prints, so the documentation cannot drift from
the code.

Each console block runs as one bash script in a scratch copy of the project root (symlinks, no
`.env`, no `.data`), with the API of `make run` on a free port (the only rewrite: its address)
and the emulator as upstream. Commands shown with `$ ` are followed by the output the page
shows: each shown line must appear in what the command printed, digits masked (prices and times
move) and `…` matching anything.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scripts.settings_doc import settings_page
from tests.conftest import ROOT, free_port, scratch_copy, wait_for_http

# The README first: its blocks are what a new user runs first, on a fresh stack.
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README = PAGES[0].read_text()
MARKER = "::readme-command::"

# What a test here cannot run as written, and what checks it instead. Anything else must run.
NOT_RUN_HERE = {
    "docker compose": "no Docker engine here; tests/test_deployment.py validates the compose file and each command",
    "apt-get install": "changes the machine",
    "make deploy-check": "needs a Docker engine; run by hand, its figures are in docs/deployment.md",
}
# Benchmarks take minutes: their argument parsing and imports are checked with --help.
HELP_ONLY = ".venv/bin/python -m bench."


@dataclass
class Command:
    text: str
    shown: list[str] = field(default_factory=list)  # the output lines the page shows


def console_blocks(markdown: str) -> list[list[Command]]:
    """A page's ```console blocks as commands: `$ ` lines (then their output) or, in a block
    without prompts, every line that is not a comment; a trailing backslash continues a line."""
    blocks = []
    for body in re.findall(r"^```console\n(.*?)^```", markdown, flags=re.M | re.S):
        lines = body.replace("\\\n", " ").splitlines()
        prompted = any(line.startswith("$ ") for line in lines)
        commands: list[Command] = []
        for line in lines:
            if prompted and line.startswith("$ "):
                commands.append(Command(line[2:].strip()))
            elif prompted and commands:
                commands[-1].shown.append(line)
            elif not prompted and line.strip() and not line.lstrip().startswith("#"):
                commands.append(Command(line.strip()))
        blocks.append(commands)
    return blocks


def as_run_here(command: str, api: str) -> str:
    """The command as this test runs it: as written, the API's address aside."""
    for prefix, reason in NOT_RUN_HERE.items():
        if command.startswith(prefix):
            return f"echo 'not run here ({reason})'"
    if command.startswith(HELP_ONLY):
        return re.split(r" --|\s+#", command, maxsplit=1)[0] + " --help"
    return command.replace("localhost:6667", api)


def pattern(line: str) -> re.Pattern:
    masked = re.escape(re.sub(r"\d+", "#", line.split("  #")[0].rstrip()))
    return re.compile(masked.replace("…", ".*"))


def block_script(block: list[Command], api: str) -> str:
    """One bash script for a block: it stops at the first command that fails, a curl answered with
    an HTTP error included (curl itself exits 0 then), each command's output after a marker line."""
    runs = [f"echo; echo '{MARKER}{i}'\n{{ {as_run_here(c.text, api)}\n}} 2>&1\n" for i, c in enumerate(block)]
    return 'set -e\ncurl() { command curl --fail-with-body "$@"; }\n' + "".join(runs)


@pytest.fixture
def stack(emulator, tmp_path, project_dir) -> Iterator[dict]:
    """What `make run` provides, on free ports: the emulator, a fresh SQLite warehouse, a Dagster
    instance, the API, and the current minute materialized (the schedule's first tick)."""
    home = tmp_path / "dagster"
    home.mkdir()
    (tmp_path / "data").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CMC_API_KEY", "CRYPTOCOMPARE_API_KEY", "VIRTUAL_ENV")}
    env.update(
        EMULATOR_URL=emulator.url,
        DATABASE_URL=f"sqlite:///{tmp_path / 'warehouse.db'}",  # never migrated: first use creates it
        DAGSTER_HOME=str(home),
        HISTORY_DIR=str(tmp_path / "data" / "history"),  # each block's `.data` (below)
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]]),
        LOG_CONSOLE="false",
    )
    port = free_port()
    api = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=project_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz")
        now = datetime.now(UTC).strftime("%Y-%m-%d-%H:%M")
        subprocess.run(
            ["dg", "launch", "--assets", "prices,rankings,top_assets", "--partition", now],
            cwd=project_dir, env=env, check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        yield {"env": env, "api": f"127.0.0.1:{port}"}
    finally:
        api.terminate()
        api.wait(10)


def test_the_settings_page_is_what_the_generator_prints():
    assert (ROOT / "docs" / "settings.md").read_text() == settings_page(), (
        "docs/settings.md is stale: python -m scripts.settings_doc > docs/settings.md"
    )


FENCED = re.compile(r"^```.*?^```", flags=re.M | re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")
# A page and heading named in code or configuration: error messages, docstrings, comments.
CODE_REFERENCE = re.compile(r"\b(docs/[\w-]+\.md)(?:#([\w-]+))?")


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", FENCED.sub("", page.read_text()), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def broken(target: Path, anchor: str | None) -> str | None:
    if not target.is_file():
        return "no such file"
    if anchor and anchor not in anchors(target):
        return f"no heading #{anchor}"
    return None


def test_every_relative_link_leads_to_a_page_and_heading_that_exist():
    problems = []
    for page in PAGES:
        for link in LINK.findall(FENCED.sub("", page.read_text())):
            if re.match(r"[a-z]+:", link):
                continue  # http(s), mailto: not this test's to check
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            if why := broken(target, anchor or None):
                problems.append(f"{page.relative_to(ROOT)}: ({link}): {why}")
    assert not problems, "\n".join(problems)


def test_the_documentation_named_in_code_exists():
    sources = [
        path
        for folder in (
            "api",
            "bench",
            "common",
            "crypto_pipeline",
            "deploy",
            "emulator",
            "scripts",
            "tests",
            "warehouse",
        )
        for path in (ROOT / folder).rglob("*")
        if path.suffix in (".py", ".yaml")
    ]
    sources += [ROOT / name for name in ("oas.yaml", "docker-compose.yml", ".env.example", "Makefile")]
    named = {(ref, anchor) for path in sources for ref, anchor in CODE_REFERENCE.findall(path.read_text())}
    assert len(named) >= 5
    problems = [f"{ref}#{anchor}: {why}" for ref, anchor in named if (why := broken(ROOT / ref, anchor or None))]
    assert not problems, problems


def test_the_readme_console_blocks_parse_into_commands():
    commands = [c.text for page in PAGES for block in console_blocks(page.read_text()) for c in block]
    assert "dg launch --assets prices,rankings,top_assets --partition 2026-11-27-12:05" in commands
    blocks = console_blocks(README)
    assert all(not c.endswith("\\") for c in commands)
    first = blocks[0][0]
    assert first.text.startswith("curl 'localhost:6667/?limit=3&format=csv'")
    assert first.shown[0] == "Rank,Symbol,Price USD"
    assert {row.split(",")[1] for row in first.shown[1:]} <= {"BTC", "ETH", "USDT"}  # the real market's top


@pytest.mark.timeout(1800)  # a few Dagster runs; minutes on a loaded 2-core machine
def test_every_console_command_works_as_written(stack, tmp_path):
    blocks = [(page.relative_to(ROOT), block) for page in PAGES for block in console_blocks(page.read_text())]
    for number, (page, block) in enumerate(blocks):
        # Each command in braces, so a trailing comment cannot swallow the redirection of its stderr.
        # The marker on a line of its own even after an answer without a final newline (curl's JSON).
        script = block_script(block, stack["api"])
        cwd = scratch_copy(tmp_path / f"block{number}")
        (cwd / ".data").symlink_to(Path(stack["env"]["HISTORY_DIR"]).parent)  # as `make run`'s data folder
        result = subprocess.run(
            ["bash", "-c", script], cwd=cwd, env=stack["env"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, f"{page}: block failed:\n{script}\n{result.stdout[-3000:]}{result.stderr}"
        printed = dict(re.findall(rf"^{MARKER}(\d+)\n(.*?)(?=^{MARKER}|\Z)", result.stdout, flags=re.M | re.S))
        for i, command in enumerate(block):
            lines = printed.get(str(i), "").replace("\r", "").splitlines()
            masked = [re.sub(r"\d+", "#", line) for line in lines]
            for shown in command.shown:
                assert any(pattern(shown).fullmatch(line) for line in masked), (
                    f"{page}: `{command.text}` printed no line like {shown!r}:\n" + "\n".join(lines[:20])
                )


def test_a_curl_answered_with_an_error_fails_its_block(emulator, tmp_path):
    """curl exits 0 on a 4xx or 5xx answer: a page's curl that shows no output would pass on a 503."""
    script = block_script([Command(f"curl '{emulator.url}/no-such-route'")], "unused")
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0, result.stdout
