"""modelgarden: one gateway that is a drop-in Ollama server and an OpenAI-compatible server."""

__version__ = "0.1.0"

# The Ollama API version this gateway presents on /api/version. Clients such as Open WebUI
# and VS Code parse it as a numeric semver and gate features on it.
OLLAMA_COMPAT_VERSION = "0.12.6"
