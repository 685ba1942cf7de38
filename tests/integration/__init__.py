"""Tests with real mosquitto and chatd (a package: basenames may repeat tests/unit)."""
