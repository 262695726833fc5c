"""File and tree digests: what the statement's subjects and inputs name."""
