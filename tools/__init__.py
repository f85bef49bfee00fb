"""Developer tools run by make (never imported by the app or its tests)."""
