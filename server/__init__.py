"""MCP wiring: configuration, app factory, lifespan, transports, auth and the command line."""
