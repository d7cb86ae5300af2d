"""Research that changed nothing that ships (see README.md here); not installed."""
