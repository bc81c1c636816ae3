"""The paper's experiments as library code: each module is one study behind a ``metasparse`` subcommand."""
