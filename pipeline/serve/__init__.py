"""``jpipe serve``: the HTTP API over the trained models (FastAPI on uvicorn).

* ``app``: the FastAPI application (``create_app``) and its routes;
* ``service``: endpoint logic, worker threads, limits;
* ``batching``: dynamic micro-batching of classify requests;
* ``registry``: which models a project has, loading and describing them;
* ``schemas``: request and response bodies (the OpenAPI schema);
* ``errors``: every error as JSON with a stable code; body-size and content-type guard;
* ``server``: running it with uvicorn (``jpipe serve``).

Importing this package is cheap; FastAPI, torch and the models load in the submodules.
"""
