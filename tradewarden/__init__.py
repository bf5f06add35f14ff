"""tradewarden: an MCP server through which LLM agents trade, behind one gate.

The version is written here only; pyproject.toml reads it (setuptools dynamic version).
"""

__version__ = "0.1.0"
