"""Where the Jinja templates live (the top-level templates/ folder)."""

from pathlib import Path

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def template_path(name: str) -> str:
    return str(TEMPLATES / name)
