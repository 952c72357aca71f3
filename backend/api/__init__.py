"""The HTTP API process: routes built from the job kinds, admission, uploads, waits. Never imports backend.dispatch."""
