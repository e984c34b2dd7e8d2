"""`make docs`: the guide (README.md and docs/*.md) and the code reference of the project's
packages, rendered by pdoc into `build/docs/`.

Open `build/docs/guide/index.html` (the README) or `build/docs/index.html` (the code reference)
in a browser. The guide's pages are rendered with pdoc's own Markdown and page frame, their links
to each other rewritten to the rendered pages. The build fails (exit status 1) when a module
cannot be imported or when a docstring names a project object in backticks
(`package.module.Name`) that does not exist, so CI catches both.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from pathlib import Path

import pdoc
import pdoc.render

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "build" / "docs"
GUIDE = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A relative link to a page of the guide, with its optional anchor.
PAGE_LINK = re.compile(r"\]\((?!\w+:)([^)#\s]*?)([\w-]+)\.md(#[^)\s]*)?\)")
GUIDE_FRAME = """{% extends "frame.html.jinja2" %}
{% block title %}{{ title }}{% endblock %}
{% block nav %}<h2>Guide</h2><ul>{% for name, page in pages %}<li><a href="{{ page }}">{{ name }}</a></li>{% endfor %}
</ul><h2><a href="../index.html">Code reference</a></h2>{% endblock %}
{% block content %}<main class="pdoc"><section class="module-info docstring">{{ body | safe }}</section></main>
{% endblock %}"""
PACKAGES = ("api", "common", "crypto_pipeline", "emulator", "scripts", "warehouse")
# A qualified project name inside <code> that pdoc could not turn into a link (not a file name).
UNRESOLVED = re.compile(
    r"<code>((?:" + "|".join(PACKAGES) + r")(?:\.\w+)+)(?<!\.yaml)(?<!\.toml)(?<!\.py)(?<!\.db)(?:\(\))?</code>"
)


def build(output: Path = OUTPUT) -> list[str]:
    """Render every module of `PACKAGES` into `output`; return the problems found (empty: success)."""
    pdoc.render.configure(footer_text="crypto-toplist", show_source=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pdoc.pdoc(*PACKAGES, output_directory=output)
        except RuntimeError as error:  # pdoc's "Error importing <module>", caused by the import's own error
            return [f"{error}: {error.__cause__!r}"]
    problems = [
        f"pdoc: {warning.message}" for warning in caught if warning.filename.startswith(str(Path(pdoc.__file__).parent))
    ]
    for page in sorted(output.rglob("*.html")):
        for name in sorted(set(UNRESOLVED.findall(page.read_text()))):
            problems.append(f"{page.relative_to(output)}: broken reference `{name}`")
    return problems + build_guide(output / "guide")


def rendered_name(page: Path) -> str:
    return "index.html" if page.name == "README.md" else f"{page.stem}.html"


def build_guide(output: Path) -> list[str]:
    """Render every page of `GUIDE` into `output`; return the pages that link to a missing page."""
    output.mkdir(parents=True, exist_ok=True)
    names = {page.stem if page.name != "README.md" else "README": rendered_name(page) for page in GUIDE}
    frame = pdoc.render.env.from_string(GUIDE_FRAME)
    problems = []

    def rewrite(match: re.Match, page: Path) -> str:
        if match[2] not in names:
            problems.append(f"{page.relative_to(ROOT)}: link to a page not in the guide: {match[0]}")
            return match[0]
        return f"]({names[match[2]]}{match[3] or ''})"

    pages = [(page.read_text().partition("\n")[0].lstrip("# "), rendered_name(page)) for page in GUIDE]
    for page, (title, name) in zip(GUIDE, pages, strict=True):
        markdown = PAGE_LINK.sub(lambda match, page=page: rewrite(match, page), page.read_text())
        body = pdoc.render_helpers.to_html(markdown)
        (output / name).write_text(frame.render(title=title, body=body, pages=pages))
    return problems


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.build_docs", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT, help="folder to write (default: build/docs)")
    args = parser.parse_args(argv)
    problems = build(args.output)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        raise SystemExit(1)
    print(f"Documentation written to {args.output / 'guide' / 'index.html'} (the code reference: index.html)")


if __name__ == "__main__":
    main()
