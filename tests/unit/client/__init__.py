"""Unit tests of the public client, `modelloop.client`."""
