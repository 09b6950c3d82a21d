"""The OpenAI-compatible HTTP API under /v1, in the shape of vLLM's OpenAI entrypoints.

``protocol`` (request and response bodies) <- ``errors`` (OpenAI-shaped errors) <- ``admission`` (the
bounded line) <- ``streams`` (answers off the event loop) <- ``serving`` (the logic) <- ``routes`` (the
apps and servers).
"""
