"""The Lua sources of backend.scripts: data shipped with the package, not Python."""
