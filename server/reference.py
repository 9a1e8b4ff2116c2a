"""The interactive API reference at ``/api/docs``: Swagger UI over ``/api/openapi.json``, offline.

Swagger UI's files are vendored in the package (``static/swagger_ui/``, see its ``SOURCE.md`` for
origin, version, hashes and licences), so the page needs nothing but this server: no CDN, no
validator badge. Only the files named in :data:`ASSETS` are served, by name (no paths, so nothing
else of the package can be read through it). The page needs no key; "Try it out" asks for one.
"""
from __future__ import annotations

from importlib import resources

from aiohttp import web

from .problems import Problem

#: the files the page loads: name -> (package path under ``static/``, content type)
ASSETS = {"swagger-ui-bundle.js": ("swagger_ui/swagger-ui-bundle.js", "text/javascript"),
          "swagger-ui.css": ("swagger_ui/swagger-ui.css", "text/css"),
          "reference.js": ("reference.js", "text/javascript")}
#: scripts and styles from this server only; Swagger UI sets inline styles and draws data: images
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
          "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
_STATIC = resources.files("dispatchsim.server") / "static"


def _read(name: str) -> bytes:
    return (_STATIC / name).read_bytes()


async def reference_page(request: web.Request) -> web.Response:
    """The reference page (HTML); its scripts and styles come from :func:`reference_asset`."""
    return web.Response(body=_read("reference.html"), content_type="text/html", charset="utf-8",
                        headers={"Content-Security-Policy": POLICY, "X-Frame-Options": "DENY",
                                 "Cache-Control": "no-cache"})


async def reference_asset(request: web.Request) -> web.Response:
    """One of the page's vendored files; any other name is a 404 problem document."""
    name = request.match_info["asset"]
    if name not in ASSETS:
        raise Problem(404, "not-found", f"no asset {name!r} (known: {', '.join(sorted(ASSETS))})")
    path, ctype = ASSETS[name]
    return web.Response(body=_read(path), content_type=ctype, charset="utf-8",
                        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})
