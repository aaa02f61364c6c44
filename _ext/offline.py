"""Sphinx extension: keep the book's pages free of remote scripts.

Jupyter Book 1 always loads sphinx-thebe, which declares its CDN URL in an inline script
(twice, which is also a JavaScript error).  The book has no live-code buttons, so every
thebe script is dropped from each page.
"""


def _drop_thebe(app, pagename, templatename, context, doctree):
    files = context.get("script_files")
    if not files:
        return
    kept = []
    for js in files:
        body = str(getattr(js, "attributes", {}).get("body", ""))
        if "THEBE" in body or "thebe" in str(js):
            continue
        kept.append(js)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", _drop_thebe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
