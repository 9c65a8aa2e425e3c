"""An OTLP/HTTP trace receiver that counts and discards: where ``bench_relay.py``'s traced
gateways export their spans.

``POST /v1/traces`` takes an ``ExportTraceServiceRequest`` (protobuf), counts its spans
and answers an empty ``ExportTraceServiceResponse``; ``GET /v1/traces`` says how many
export requests and spans arrived, so a run can show that tracing was on for every request.
It runs as a process of its own, so decoding costs the gateway nothing.

    python benchmarks/otlp_sink.py --port 4318
"""

from __future__ import annotations

import argparse
import asyncio

import orjson
import uvloop
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


class Sink:
    """Counts the export requests and spans received."""

    def __init__(self) -> None:
        self.requests = 0
        self.spans = 0
        self.names: dict[str, int] = {}

    async def export(self, request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        self.requests += 1
        for resource_spans in message.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.spans += len(scope_spans.spans)
                for span in scope_spans.spans:
                    self.names[span.name] = self.names.get(span.name, 0) + 1
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def counts(self, request: web.Request) -> web.Response:
        body = {"requests": self.requests, "spans": self.spans, "names": self.names}
        return web.Response(body=orjson.dumps(body), content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args()
    sink = Sink()
    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/v1/traces", sink.export)
    app.router.add_get("/v1/traces", sink.counts)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
