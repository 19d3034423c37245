"""The gateway on Ray Serve: the same FastAPI app (:func:`api.main.create_app`) as a Serve deployment, each replica
building its own app, engine and model, so replicas spread over every CPU of a machine or a Ray cluster.

    serve run config/ray-serve.yaml                  # local Ray on this machine (./medgpt.sh up --ray)
    serve deploy config/ray-serve.yaml               # from the head node itself (its dashboard on loopback)

Routes, errors, keys, limits, SSE streams and ``/metrics`` are the app's own; Serve only places replicas and
proxies HTTP to them. A replica's settings are the gateway's (``MEDGPT_*`` variables, ``MEDGPT_CONFIG``), set per
application in the Serve config's ``runtime_env``; give each replica as many llama.cpp threads
(``MEDGPT_LLAMACPP__N_THREADS``) as the CPUs Ray reserves for it (``ray_actor_options.num_cpus``).

Where the gateway listens is Serve's proxy (``http_options.host``), not ``MEDGPT_HOST``: each replica reads it from
the Serve controller and the start-up warning about keys being off beyond loopback is given for that address
(:func:`build`). A Serve config deployed with ``serve deploy`` (KubeRay's included) listens on all interfaces
unless its ``http_options`` say otherwise.
"""

from __future__ import annotations

import logging

from ray import serve

from api.main import create_app
from medgpt.engines import Engine
from medgpt.settings import Settings

log = logging.getLogger("medgpt.api")

#: The listen address given to the warning when Serve's cannot be read: not loopback, so keys off still warns.
UNKNOWN_HOST = "an address Ray Serve did not report"


def serve_http_address() -> tuple[str, int] | None:
    """Where Serve's HTTP proxy listens (its ``http_options``), read from the Serve controller of the Ray this
    process belongs to; None outside Ray (nothing is started to find out), or when Serve runs no HTTP proxy.
    ``(UNKNOWN_HOST, 0)`` when the controller cannot be asked."""
    import ray

    if not ray.is_initialized():
        return None
    try:
        from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

        controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        options = ray.get(controller.get_http_config.remote(), timeout=30)
    except Exception as exc:  # noqa: BLE001 - private API of Ray: whatever changed, say so and assume the worst
        log.warning("could not read Ray Serve's HTTP options (%s): assuming it listens beyond loopback",
                    type(exc).__name__)  # fmt: skip
        return UNKNOWN_HOST, 0
    if options.host is None:  # Serve starts no proxy: nothing listens
        return None
    return options.host, options.port


def build(settings: Settings | None = None, engine: Engine | None = None):
    """One replica's app: :func:`~api.main.create_app` with the settings' ``host``/``port`` set to where Serve
    listens, so the start-up warning (keys off on an address others can reach) is about the real address."""
    settings = settings or Settings()
    where = serve_http_address()
    if where is not None:
        settings = settings.model_copy(update={"host": where[0], "port": where[1]})
    return create_app(settings, engine)


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=16)
@serve.ingress(build)  # a builder: the app (and its model) is made inside each replica, never pickled
class MedGPT:
    """One gateway replica."""


#: The Serve application (``import_path: api.ray_serve:app``).
app = MedGPT.bind()
