"""modelgarden: one gateway that is a drop-in Ollama server and an OpenAI-compatible server."""

# The package's one version string: pyproject.toml reads it (dynamic = ["version"]).
__version__ = "0.1.0"

# The Ollama API version this gateway presents on /api/version. Clients such as Open WebUI,
# VS Code and Codex parse it as a numeric semver and gate features on it: 0.14.3 is the
# last 0.14 release, the first whose API includes both /v1/responses (0.13.3) and
# /v1/messages (0.14.0). A few later additions are served too (docs/API.md).
OLLAMA_COMPAT_VERSION = "0.14.3"
