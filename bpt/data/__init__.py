"""Data: loading the built-in sets, .npz files, image folders and memory-mapped array
directories (datasets, image_folder, shared_data), and preparing a job from a user's
choices (prepare: checks every input, builds the spec and the initial weights).

Reads files and, in prepare, builds the model with torch; no Redis, no Celery.
"""
