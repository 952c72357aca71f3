"""The Redis contract: every key, the Lua scripts that change a job's state, and their
Python faces (store, queue, fair share, the client registry). Imports only backend.core."""
