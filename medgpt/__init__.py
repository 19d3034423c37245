"""MedGPT core: prompts, engine interface and engines, settings. The apps (api, finetune, evaluator) build on it."""

__version__ = "0.1.0"
