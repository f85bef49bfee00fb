"""The app's Gateway client, trusting the bench's self-signed certificate.

The client deliberately ignores ``REQUESTS_CA_BUNDLE`` (``trust_env`` is off),
so the TLS phase of the bench points it at its throw-away CA through this
subclass, using the ``build_session`` hook the client offers.
"""

from __future__ import annotations

import os

import requests

from gateway_realtime.client import GatewayClient


class BenchGatewayClient(GatewayClient):
    def build_session(self) -> requests.Session:
        session = super().build_session()
        ca_bundle = os.environ.get("BENCH_CA_BUNDLE")
        if ca_bundle:
            session.verify = ca_bundle
        return session
