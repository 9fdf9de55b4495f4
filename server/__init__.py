"""citeqa HTTP service: `server.app.create_app(settings)` / `server.app.serve(settings)`."""
