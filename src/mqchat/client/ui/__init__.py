"""``chatctl ui``: a full-screen interface to chatd, built with Textual (the ``ui`` extra).

Only the modules that draw (app, widgets, screens) import Textual, and only
``chatctl ui`` imports them, after checking that Textual is installed: the
plain CLI never loads it. ``members`` and ``link`` are Textual-free, and
``chatctl chat`` shares ``members`` for its ``/who``.
"""
