"""The HTTP layer, the only FastAPI importer: the app factory, one router per protocol, ops, admin."""
