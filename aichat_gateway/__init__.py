"""AIChat Gateway: an OpenAI-compatible LLM gateway with a key marketplace."""
