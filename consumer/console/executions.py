"""Executions (a placeholder: the page itself comes with its own change)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from consumer.console.context import ConsoleContext
from consumer.console.render import page
from consumer.console.session import require


async def index(request: Request) -> Response:
    await require(request, "executions:read")
    return await page(request, "placeholder.html", title="Executions",
                      message="No executions to show yet.")


def routes(ctx: ConsoleContext) -> list[BaseRoute]:
    return [Route("/executions", index, methods=["GET"])]
