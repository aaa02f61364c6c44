"""Service families the course configures on lab hosts.

Each module renders its config from a Jinja2 template (in ``templates/``) with the
topology's values, writes it over SSH, runs the real tool's own check on it, and
starts the service.  Chapters show the rendered file, so readers see the real config.
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES = Path(__file__).parent / "templates"

_env = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, keep_trailing_newline=True,
                   trim_blocks=True, lstrip_blocks=True)


def render(template: str, **values) -> str:
    """Render ``templates/<template>``; a missing value is an error naming it (StrictUndefined)."""
    return _env.get_template(template).render(**values)
