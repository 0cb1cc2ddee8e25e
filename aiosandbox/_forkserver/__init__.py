"""The fork server process and its client."""
