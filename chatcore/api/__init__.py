"""The OpenAI-compatible HTTP API under /v1, in the shape of vLLM's OpenAI entrypoints.

``protocol`` (request and response bodies) <- ``errors`` (OpenAI-shaped errors) <- ``admission`` (the
bounded line) <- ``streams`` (answers off the event loop) <- ``library`` (``/v1/library`` and the checks of
the ``chatcore`` request field) <- ``serving`` (the logic) <- ``routes`` (the apps and servers).
"""
