"""Fluido: an OpenAI-compatible proxy for self-hosted LLM servers."""
