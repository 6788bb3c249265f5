"""The GX Data Docs site, served by the project's Airflow plugin under the api-server.

The Airflow 3 UI only follows extra links that are http(s) or on its own site, so a ``file://`` link
to the site never reached a user.  The plugin mounts this app at ``/chat-ingest/data-docs/`` on the
api-server: same site, and behind the same login (the UI's session cookie or a bearer token; an
anonymous request gets 401).  The site is the one GX writes (``validation.data_docs_site()``), on a
disk every worker writes and the api-server reads (in compose, a shared volume).

Validations write their own pages only; the index and the suites' pages are built here, when
someone opens one of them and a validation has written a page since (in a child process: Great
Expectations stays out of the api-server).
"""

import logging

log = logging.getLogger(__name__)


URL_PREFIX = "/chat-ingest/data-docs"


def page_url(page: str | None) -> str:
    """The link to a page of the site (its index when ``page`` is None): a path on the api-server's
    own site (under ``[api] base_url``'s path), so the UI opens it in place, whatever host and port
    the api-server is reached at later."""
    from urllib.parse import urlsplit

    from airflow.configuration import conf

    prefix = urlsplit(conf.get("api", "base_url", fallback="")).path.rstrip("/")
    return f"{prefix}{URL_PREFIX}/{page or 'index.html'}"


class DataDocsApp:
    """The ASGI app the plugin mounts, built on its first request: every component loads the plugin
    (the scheduler, each task process), and only the api-server should pay for FastAPI's import."""

    def __init__(self) -> None:
        self._app = None

    async def __call__(self, scope, receive, send) -> None:
        if self._app is None:
            self._app = create_app()
        await self._app(scope, receive, send)


def create_app():
    """A FastAPI app that serves the site's files to logged-in users only (no ``from __future__ import
    annotations`` in this module: FastAPI reads the dependency's annotations as objects)."""
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse
    from fastapi.security import HTTPAuthorizationCredentials

    async def logged_in(request: Request):
        """The api-server's own authentication (``get_user``: a bearer token, else the UI's session
        cookie); raises 401 for an anonymous request."""
        from airflow.api_fastapi.core_api.security import get_user

        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        bearer = HTTPAuthorizationCredentials(scheme=scheme, credentials=credentials) if credentials else None
        return await get_user(request, None, bearer)

    app = FastAPI(title="chat-ingest GX Data Docs", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(logged_in)])

    @app.get("/{path:path}")
    def page(path: str) -> FileResponse:
        from chat_ingest.validation import data_docs_site

        site = data_docs_site().resolve()
        path = path or "index.html"
        if path == "index.html" or path.startswith("expectations/"):
            refresh_index()
        target = (site / path).resolve()
        if not target.is_relative_to(site) or not target.is_file():
            raise HTTPException(status_code=404, detail=f"no Data Docs page {path!r} (has a validation run yet?)")
        return FileResponse(target)

    return app


def refresh_index() -> None:
    """Build the site's index and suite pages if they are out of date, in a child process; on failure,
    log it and leave the previous ones to be served."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import chat_ingest
    from chat_ingest.validation import data_docs_index_outdated

    if not data_docs_index_outdated():
        return
    package_root = str(Path(chat_ingest.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    built = subprocess.run([sys.executable, "-c", "from chat_ingest.validation import build_data_docs_index; "
                            "build_data_docs_index()"], env=env, capture_output=True, text=True, timeout=600)
    if built.returncode:
        log.error("the Data Docs index could not be built; serving the previous one:\n%s", built.stderr[-4000:])
