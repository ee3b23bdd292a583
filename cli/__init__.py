"""The `bpt` command line (Click)."""
