"""Prompt templates and what models write back: Ollama's Go templates, Hugging Face's Jinja
chat templates, tool-call formats and thinking tags. Pure functions, no I/O."""
