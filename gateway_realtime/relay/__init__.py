"""Relay mode: the browser talks to the site's WebSocket, the site to the Gateway."""
