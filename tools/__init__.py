"""The MCP tools: argument models, one call into the gate each, result models. Thin by design."""
