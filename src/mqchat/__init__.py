"""mqchat: encrypted group chat over MQTT for people who live in a terminal."""

__version__ = "0.1.0"
