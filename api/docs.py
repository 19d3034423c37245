"""Swagger UI at ``/docs`` and ReDoc at ``/redoc`` that work air-gapped.

FastAPI's stock pages load ``swagger-ui-bundle.js``, its CSS, ``redoc.standalone.js`` and a favicon from public
CDNs, and ReDoc's page adds Google Fonts: on a hospital network without internet both pages stay blank. Here the
same pages are built with every asset served by the gateway itself, from the ``fastapi-offline`` package (MIT),
which ships Swagger UI (Apache-2.0) and ReDoc (MIT) bundles as package data (1.7.7: Swagger UI 5.32.6, ReDoc
2.5.3); upgrading that package upgrades the pages. The pages only need ``/openapi.json``, never the engine.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

#: Where the bundled Swagger UI / ReDoc files are served.
STATIC_URL = "/docs-static"
#: (package, folder) holding ``swagger-ui-bundle.js``, ``swagger-ui.css``, ``redoc.standalone.js``, ``favicon.png``.
ASSETS = ("fastapi_offline", "static")
#: Sent with both pages: the browser fetches nothing but this gateway. ReDoc 2's sidebar always adds an <img> of
#: the Redocly logo from cdn.redoc.ly (hidden when it fails); without this header every page view would still try
#: to reach the internet. Inline script/style: the pages' own start-up script and the bundles' injected styles;
#: blob: workers: ReDoc's search index.
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def install(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Mount the bundled assets and add ``docs_url`` (with Swagger's OAuth2 redirect page) and ``redoc_url``.
    The app must be built with ``docs_url=None, redoc_url=None`` so FastAPI's CDN pages are not registered too."""
    if app.docs_url or app.redoc_url:
        raise ValueError("build the app with docs_url=None and redoc_url=None: FastAPI's own pages load CDNs")
    app.mount(STATIC_URL, StaticFiles(packages=[ASSETS]), name="docs-static")
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url or f"{docs_url}/oauth2-redirect"

    # root_path: behind a proxy that serves the gateway under a prefix, every URL the page loads carries it.
    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{oauth2_redirect_url}",
            swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )
        page.headers["Content-Security-Policy"] = CSP
        return page

    @app.get(oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{STATIC_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = CSP
        return page
