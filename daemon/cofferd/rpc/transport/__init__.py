"""The Unix-socket transport: the server, binding and peer checks, per-caller
limits, and a caller's fds read and written under the call's deadline."""
