"""Serve mode: the HTTP API, its OpenAPI document, API keys and the serve loop.

This part sits above the engine and uses only its public interface (``dispatchsim.engine``).
"""
