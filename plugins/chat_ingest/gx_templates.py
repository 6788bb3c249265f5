"""Great Expectations' Data Docs templates, compiled once per process tree instead of once per page.

GX renders every Data Docs page through a new Jinja environment, so each validation parsed and compiled
the same few dozen templates again: about a third of a validation's own time (bench/README.md,
``validate_table``).  Importing this module gives every GX view one Jinja bytecode cache, held in memory,
and fills it.  The process that task processes are forked from imports it
(:data:`chat_ingest.project.TASK_PRELOAD_MODULES`), so every validate task starts with the compiled
templates; :func:`chat_ingest.validation.run_gate` imports it too, so a process that was not preloaded
compiles each template once.  A template whose source changes (a GX upgrade) is compiled again: Jinja
checks each cached template against its source's checksum.
"""

from __future__ import annotations

from great_expectations.render.view import view as gx_view
from jinja2 import BytecodeCache, TemplateError


class SharedTemplates(BytecodeCache):
    """Jinja's bytecode cache, in this process's memory (inherited by the processes it forks)."""

    def __init__(self) -> None:
        self.code: dict[str, bytes] = {}

    def load_bytecode(self, bucket) -> None:
        code = self.code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket) -> None:
        self.code[bucket.key] = bucket.bytecode_to_string()

    def clear(self) -> None:
        self.code.clear()


TEMPLATES = SharedTemplates()


def _share_templates() -> None:
    """Every GX view's environment (created in ``DefaultJinjaView.__init__``) uses :data:`TEMPLATES`."""
    create = gx_view.DefaultJinjaView.__init__

    def __init__(self, *args, **kwargs) -> None:
        create(self, *args, **kwargs)
        self.env.bytecode_cache = TEMPLATES

    gx_view.DefaultJinjaView.__init__ = __init__


def _compile_all() -> None:
    environment = gx_view.DefaultJinjaView().env
    for name in environment.list_templates():
        try:
            environment.get_template(name)
        except (TemplateError, UnicodeDecodeError):  # a static file among the templates: GX never renders it
            continue


_share_templates()
_compile_all()
