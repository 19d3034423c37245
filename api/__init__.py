"""MedGPT HTTP gateway (FastAPI). Start with ``uvicorn api.main:create_app --factory``."""
