"""LLM judges: engines that grade an answer against the ground truth and reply with ``{score, explanation}``.

``base`` holds the interface, the lenient reply parser and the shared call wrapper (concurrency limit,
retries, de-identification for external judges); one file per backend: ``groq_judge`` (the official Groq
client, any OpenAI-compatible server through its base URL) and ``engine_judge`` (a core engine: local
llama.cpp or Ollama).
"""
