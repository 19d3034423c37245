"""Fine-tuning pipeline: medical MCQ data → rsLoRA → GGUF (adapter and merged quantizations) → Ollama.

Stages (``python -m finetune``): prepare, train, export, register. Only the core (``medgpt.*``) is imported.
"""
