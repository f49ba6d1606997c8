"""Pages: Jinja2 templates (autoescaped) in consumer/console/templates/, one layout
(base.html). `page()` fills in who is looking, the CSRF token, the navigation and the
tenant selector; templates get `time`, `json` and `static` helpers.

Times are rendered as <time datetime="…Z" title="… UTC">… UTC</time>: static/console.js
rewrites the text into the viewer's zone and keeps UTC on hover; without JavaScript the UTC
text stays."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from consumer.console import vendor

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
PATH = "/console"

# (label, path, what it needs to be shown: a scope, "keys" for key managers, None for all)
NAV: tuple[tuple[str, str, str | None], ...] = (
    ("Overview", "/overview", None),
    ("Scripts", "/scripts", None),
    ("Executions", "/executions", None),
    ("Dead letters", "/dead-letters", None),
    ("Keys", "/keys", "keys"),
)


def time_tag(value: datetime | str | None, empty: str = "—") -> Markup:
    if value is None or value == "":
        return Markup(escape(empty))
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return Markup(escape(value))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    utc = value.astimezone(UTC)
    iso = utc.isoformat().replace("+00:00", "Z")
    shown = utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(iso, shown, shown)


def as_json(value: Any, indent: int | None = 2) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=False, sort_keys=False, default=str)


@cache
def _digest(name: str) -> str:
    path = STATIC / name
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    except OSError:
        return "missing"


def static_url(name: str) -> str:
    """A static file's URL, versioned by its content (served with long cache headers)."""
    return f"{PATH}/static/{name}?v={_digest(name)}"


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["time"] = time_tag
    env.filters["json"] = as_json
    env.globals["static"] = static_url
    env.globals["P"] = PATH
    return env


def render(template: str, **ctx: Any) -> str:
    return environment().get_template(template).render(**ctx)


async def page(request: Request, template: str, *, status: int = 200,
               headers: dict[str, str] | None = None, **ctx: Any) -> HTMLResponse:
    """A whole page (or an htmx fragment: a template that does not extend base.html) with
    the viewer, CSRF token, navigation and tenant selector filled in."""
    viewer = getattr(request.state, "viewer", None)
    nav = []
    if viewer is not None:
        for label, path, needs in NAV:
            if needs == "keys" and not viewer.manages_keys:
                continue
            href = PATH + path
            nav.append({"label": label, "href": href,
                        "current": request.url.path.startswith(href)})
    tenants: list[dict[str, Any]] = []
    if viewer is not None and viewer.operator and not ctx.get("fragment"):
        store = request.app.state.console.store
        tenants = await store.tenants.names(500)
    body = render(template, request=request, viewer=viewer,
                  csrf=viewer.csrf if viewer is not None else "", nav=nav, tenants=tenants,
                  here=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
                  vendor_missing=vendor.missing(), **ctx)
    return HTMLResponse(body, status_code=status, headers=headers)
