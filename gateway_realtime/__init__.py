"""Mint short-lived Vercel AI Gateway client secrets for browsers, per user."""

__version__ = "0.1.0"
