"""Persistence and plumbing shared by the API and the worker: settings, tables, sessions, artifacts, queue.

Nothing here imports torch or transformers, so the API process stays light.
"""
