"""The pure protocol core: key derivation, envelopes, topics, IPC schema.

Nothing here touches the network, files, clocks, randomness or logs: callers
pass those in. Importing this package must stay cheap (``chatctl`` imports
``mqchat.protocol.ipc``), so submodules are imported where they are used.
"""
