"""samkit studio: interactive annotation on a local server with a project database.

``Project`` ties a project directory (SQLite store, image folder, embedding cache) to a model;
``create_app`` serves it over HTTP (see ``server.py``).
"""

from samkit.studio.project import Project, model_id_for
from samkit.studio.server import create_app
from samkit.studio.store import NotFound, ProjectStore, StoreError

__all__ = ["NotFound", "Project", "ProjectStore", "StoreError", "create_app", "model_id_for"]
