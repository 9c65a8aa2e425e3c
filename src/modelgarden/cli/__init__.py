"""The ``garden`` command: the verbs people know from ``ollama``, over the HTTP client.

Every command but ``serve`` (and ``keys --local``, ``doctor``) talks to a running server
(``GARDEN_HOST``/``OLLAMA_HOST``, default ``127.0.0.1:11434``). Failures print one line,
``Error: ...``, and exit 1.

One module per group of verbs, each a plain ``click`` command that :mod:`.main` adds to the
group; what they share (the client, error handling, Ollama's formatting) is
:mod:`.common`. A new verb is a command in the module of its kind, listed there.
"""

from modelgarden.cli.main import main

__all__ = ["main"]
