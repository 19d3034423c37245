"""The gateway on Ray Serve: the same FastAPI app (:func:`api.main.create_app`) as a Serve deployment, each replica
building its own app, engine and model, so replicas spread over every CPU of a machine or a Ray cluster.

    serve run config/ray-serve.yaml                  # local Ray on this machine (./medgpt.sh up --ray)
    serve deploy config/ray-serve.yaml -a http://<head>:8265   # an existing cluster (KubeRay: docker/kuberay.yaml)

Routes, errors, keys, limits, SSE streams and ``/metrics`` are the app's own; Serve only places replicas and
proxies HTTP to them. A replica's settings are the gateway's (``MEDGPT_*`` variables, ``MEDGPT_CONFIG``), set per
application in the Serve config's ``runtime_env``; give each replica as many llama.cpp threads
(``MEDGPT_LLAMACPP__N_THREADS``) as the CPUs Ray reserves for it (``ray_actor_options.num_cpus``).
"""

from __future__ import annotations

from ray import serve

from api.main import create_app


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=16)
@serve.ingress(create_app)  # a builder: the app (and its model) is made inside each replica, never pickled
class MedGPT:
    """One gateway replica."""


#: The Serve application (``import_path: api.ray_serve:app``).
app = MedGPT.bind()
