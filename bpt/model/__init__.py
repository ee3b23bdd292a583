"""Models: the built-in registry and recipes (registry), declarative networks from model
files (architecture), installed plug-ins (plugins), devices (devices, device_names) and
the torch-free list of built-in names (catalog).

Builds torch modules; no Redis, no Celery.
"""
