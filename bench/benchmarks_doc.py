"""docs/benchmarks.md, written by the bench scripts: each one owns a `## <title>` section of it."""
import json
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def replace_section(title: str, section: str) -> None:
    """Put `section` (starting with its `## <title>` line) in place of that section, or append it."""
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    DOCS.write_text(text)
    print(f"wrote {DOCS}")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the machine kind changes between sessions)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def print_report(report: dict, out: str | None) -> None:
    """Print a bench's JSON report, and write it to ``out`` too when given (e.g. docs/results/NAME.json)."""
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
