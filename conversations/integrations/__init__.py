"""Adapters that let agent frameworks keep their history in this service, through the same
services and selectors as the REST API. Each needs its framework installed
(requirements-integrations.txt); importing this package alone needs nothing."""
