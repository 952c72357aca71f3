"""Running the system: the spacetime command, spacetime up and its supervisor, the command-line client."""
