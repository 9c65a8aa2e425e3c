"""The web console: static files served at ``/ui`` and the read-only routes its pages use.

The pages are plain JavaScript modules and CSS (no build step, no CDN); they read and act
through the gateway's own APIs (``/api/*``, ``/garden/*``), so nothing runs for the console
unless a browser has it open.
"""

from modelgarden.console.routes import STATIC, mount, router

__all__ = ["STATIC", "mount", "router"]
