"""Unit tests of the adapters (no server)."""
