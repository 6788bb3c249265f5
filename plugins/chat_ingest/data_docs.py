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
from pathlib import Path

log = logging.getLogger(__name__)


URL_PREFIX = "/chat-ingest/data-docs"
#: Where the site serves the styles and scripts its pages load, under its own root.
ASSETS_PATH = "_offline"
#: The copies this package ships of what GX's pages load from CDNs (``data_docs_assets/NOTICE.md``).
ASSETS_DIR = Path(__file__).with_name("data_docs_assets")
#: Each CDN URL GX's templates name, and its copy in :data:`ASSETS_DIR`: the pages are served pointing
#: at the copies, so they are styled and list their validations with no request leaving the api-server.
OFFLINE_ASSETS = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap/bootstrap.min.js",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper/popper.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        "bootstrap-table/filter-control/bootstrap-table-filter-control.min.js",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        "bootstrap-table/filter-control/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        "bootstrap-table/filter-control/bootstrap-table-filter-control.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        "bootstrap-datepicker/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        "bootstrap-datepicker/bootstrap-datepicker.min.js",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
        "bootstrap-dark/bootstrap-prefers-dark.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "fontawesome/css/all.min.css",
    "https://cdn.jsdelivr.net/npm/vega@5": "vega/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega/vega-embed.min.js",
}


def offline_stylesheet(css: str) -> str:
    """GX's stylesheet (``static/styles/``) pointing at the site's images instead of GX's bucket: its dark
    mode's logo, which GX does not ship, is then a 404 of the site, not a request to the internet."""
    return css.replace(f"url('{GX_IMAGES}", "url('../images/")


#: Where GX's page header loads its logo from (an S3 bucket, with a timestamp query): the site's own
#: ``static/images/``, which GX fills with its static assets, holds the same images.
GX_IMAGES = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"


def offline_page(html: str, depth: int) -> str:
    """A page of the site pointing at the shipped copies instead of the CDNs, and at the site's own
    images instead of GX's bucket; ``depth``: how many folders below the site's root the page is (its
    links are relative, as GX's own)."""
    import re

    up = "../" * depth
    for cdn, copy in OFFLINE_ASSETS.items():
        html = html.replace(f'"{cdn}"', f'"{up}{ASSETS_PATH}/{copy}"')
    return re.sub(rf'"{re.escape(GX_IMAGES)}([^"?]+)(?:\?[^"]*)?"', lambda m: f'"{up}static/images/{m.group(1)}"', html)


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
    from fastapi.responses import FileResponse, HTMLResponse, Response
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
    def page(path: str) -> Response:
        """A page of the site (pointing at the shipped styles and scripts), one of those, or 404."""
        from chat_ingest.validation import data_docs_site

        if path.startswith(f"{ASSETS_PATH}/"):
            root, path = ASSETS_DIR.resolve(), path[len(ASSETS_PATH) + 1:]
        else:
            root, path = data_docs_site().resolve(), path or "index.html"
            if path == "index.html" or path.startswith("expectations/"):
                refresh_index()
        target = (root / path).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            raise HTTPException(status_code=404, detail=f"no Data Docs page {path!r} (has a validation run yet?)")
        if root != ASSETS_DIR.resolve() and target.suffix == ".html":
            return HTMLResponse(offline_page(target.read_text(encoding="utf-8"), path.count("/")))
        if root != ASSETS_DIR.resolve() and target.suffix == ".css":  # GX's own, in static/styles/
            return Response(offline_stylesheet(target.read_text(encoding="utf-8")), media_type="text/css")
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
