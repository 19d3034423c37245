"""MedGPT's evaluator: every claim the project makes about model quality is a figure produced here.

Layout (openai/simple-evals style): ``samplers`` is the tiny interface to the model under test (the core
engines, or a running gateway over HTTP); ``evals/`` holds one file per evaluation; ``scorers/`` one file per
scorer family; ``judges/`` the LLM-as-judge backends; ``report`` writes the results folder. The evaluator
imports only the core (``medgpt.*``), never ``api`` or ``finetune``, so it measures exactly what the gateway
serves.
"""
