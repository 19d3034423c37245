"""Request-scoped access to what the app factory built (settings, engine, state) as ``Annotated`` dependencies."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from medgpt.admission import Admission
from medgpt.engines import Engine
from medgpt.settings import Settings
from medgpt.tasks import Sampling


@dataclass
class Gateway:
    """Everything one app instance owns; lives on ``app.state.gateway``, never in a module global."""

    settings: Settings
    engine: Engine
    default_model: str
    ready: bool = False
    #: The engine's bounded queue: every /ask and /summarize holds a turn from it for its whole run.
    admission: Admission = field(default_factory=Admission)

    def model_for(self, requested: str | None) -> str:
        return requested or self.default_model

    def check_max_tokens(self, value: int | None, name: str = "max_tokens") -> None:
        """A 422 for a token bound over this server's limit (the schema states the limit)."""
        limit = self.settings.limits.max_tokens
        if value is not None and value > limit:
            raise HTTPException(422, f"{name} {value} is over this server's limit of {limit}")

    def sampling(self, max_tokens: int | None, temperature: float, seed: int | None) -> Sampling:
        limits = self.settings.limits
        wanted = max_tokens or limits.default_max_tokens
        self.check_max_tokens(wanted)
        # One deadline for the whole request: every chunk and merge of a long summary shares it.
        return Sampling(max_tokens=wanted, temperature=temperature, seed=seed, timeout=limits.generation_timeout,
                        deadline=time.monotonic() + limits.request_timeout)  # fmt: skip

    def check_size(self, field_name: str, text: str | None, limit: int) -> None:
        if text is not None and len(text) > limit:
            raise HTTPException(413, f"{field_name} is {len(text):,} characters; this server accepts up to {limit:,}")


def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
