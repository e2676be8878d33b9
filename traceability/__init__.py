"""The quality data chain (issue 19): part genealogy, recall scope and quality notifications.

A domain beside ``credit`` and ``federated``: it reads signed, anchored records through the
store the service gives it and imports nothing of the service itself; its HTTP routes live in
``api/routes`` and its commands in ``cli``.
"""
