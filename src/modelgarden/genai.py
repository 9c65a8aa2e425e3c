"""What the OpenTelemetry GenAI semantic conventions call each inference path, for the
spans of both the gateway (``telemetry/tracing.py``) and its Python client
(``client/_trace.py``): one table, so the two sides of a trace name an operation alike."""

#: ``gen_ai.operation.name`` of each inference path (a path not listed gets none).
OPERATIONS = {
    "/api/chat": "chat",
    "/v1/chat/completions": "chat",
    "/v1/messages": "chat",
    "/v1/responses": "chat",
    "/api/generate": "text_completion",
    "/v1/completions": "text_completion",
    "/api/embed": "embeddings",
    "/api/embeddings": "embeddings",
    "/v1/embeddings": "embeddings",
}
