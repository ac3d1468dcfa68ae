"""Test doubles shipped with the package (the scripted LLM server), reused by tests, benchmarks and the demo."""
