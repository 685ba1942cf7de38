"""chatd: the daemon that holds the broker link, room keys and message store."""
