"""The routes of the API, one module per resource; `api.main` includes their routers."""
