"""Deployment files rendered from a project: `refit deploy compose` (Docker Compose).

The templates ship in the package (`templates/`); a renderer fills them with what it reads
from the project's spec and returns the files as text, and `write_files` puts them in place.
"""
