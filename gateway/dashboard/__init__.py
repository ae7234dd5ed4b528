"""The gateway's web dashboard (aiohttp, server-sent events, a static ES-module page)."""
