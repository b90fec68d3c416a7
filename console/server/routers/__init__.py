"""The service's routes. Importing any of them first builds the request bodies' validators (models.py says why)."""

from ...models import build_request_models

build_request_models()
