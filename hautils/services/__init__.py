"""Service families the course configures on lab hosts.

Each module renders its config from a Jinja2 template (in ``templates/``) with the
topology's values, writes it over SSH, runs the real tool's own check on it, and
starts the service.  Chapters show the rendered file, so readers see the real config.
"""

from __future__ import annotations

import re
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES = Path(__file__).parent / "templates"

_env = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, keep_trailing_newline=True,
                   trim_blocks=True, lstrip_blocks=True)


def render(template: str, **values) -> str:
    """Render ``templates/<template>``; a missing value is an error naming it (StrictUndefined)."""
    return _env.get_template(template).render(**values)


def tool_check(host, command: str, path: str, tool: str, module: str, *,
               where: re.Pattern | None = None, timeout: float = 60) -> str:
    """Run a tool's own check of a file the course wrote (``keepalived -t``, ``named-checkzone``,
    ``kamailio -c``) on ``host``; return its output, or raise ``CommandError`` naming the file
    (and the line, when ``where`` finds ``(?P<file>...)`` and ``(?P<line>...)`` in the output), the
    host, what the tool said, and where the file came from (``module``'s rendering)."""
    from ..errors import CommandError

    res = host.run(command, check=False, timeout=timeout)
    out = (res.stdout + res.stderr).strip()
    if not res.ok:
        m = where.search(out) if where is not None else None
        at = f"{m['file']} line {m['line']}" if m else path
        raise CommandError(host.name, command, res.exit_status, res.stdout,
                           f"{at} rejected by {tool} on {host.name}: {out or 'no message'}\n"
                           f"(the file is hautils.services.{module}'s rendering: fix the option or the "
                           "template, then install again)")
    return out
