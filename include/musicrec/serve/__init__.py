"""The serving API (design §8, issue 16): recommendations, lyrics search and listen events over HTTP.

``create_app`` (in :mod:`musicrec.serve.app`) builds the FastAPI app; ``python -m musicrec.serve``
runs it with uvicorn and manages API keys. No Airflow imports anywhere in this package.
"""
