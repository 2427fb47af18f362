"""The `linetrace` command and its settings."""
