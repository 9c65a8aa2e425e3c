"""The least a relay can do: a floor for ``bench_relay.py`` to hold the gateway against.

Any request is sent on to the same path of one upstream with the same body, and the answer
streams back as it arrives. No routing, no validation, no error handling.

    python benchmarks/minimal_relay.py --upstream http://127.0.0.1:18000 --port 18001
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import aiohttp
import uvloop
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)


def make_app(upstream: str) -> web.Application:
    async def relay(request: web.Request) -> web.StreamResponse:
        session = request.app[SESSION]
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        body = await request.read()
        async with session.request(
            request.method, upstream + request.path_qs, data=body, headers=headers
        ) as up:
            response = web.StreamResponse(status=up.status)
            response.content_type = up.content_type
            await response.prepare(request)
            async for chunk in up.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def session(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await app[SESSION].close()

    app = web.Application()
    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{tail:.*}", relay)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", default="http://127.0.0.1:18000")
    parser.add_argument("--port", type=int, default=18001)
    args = parser.parse_args()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(
        make_app(args.upstream.rstrip("/")),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
