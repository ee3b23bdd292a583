"""Celery at the edge: the app factory, the tasks, and the worker launcher."""
