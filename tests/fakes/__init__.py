"""Fake upstream servers that speak the real Ollama and vLLM wire protocols."""
