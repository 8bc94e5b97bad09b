"""HTTP layer: OpenAI's request and response formats over the engines. Knows nothing of model internals."""
