"""Sans-I/O Engine.IO v4 and Socket.IO v5: bytes and strings in, events and packets out.

Nothing in this package awaits, reads a clock or touches a socket; the I/O layers in
``siogate.transport`` (server) and ``siogate.client`` (the ``listen`` command) drive it.
"""
