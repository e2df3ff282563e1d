"""The caption space's adapter: text embeddings from a local Ollama."""
