"""The socket API, by role (docs/architecture.md): ``dispatch/`` the machinery,
``transport/`` the Unix-socket server, ``methods/`` a module per concept,
``table`` every method's spec gathered."""
