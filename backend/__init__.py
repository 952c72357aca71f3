"""The service side of SpaceTime Analytics: HTTP API, Redis job store, dispatchers, CLI."""
