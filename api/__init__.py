"""The REST API (FastAPI): routes, schemas and auth. Imports service/ for persistence, never worker/ or torch."""
