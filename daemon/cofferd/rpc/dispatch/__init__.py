"""The dispatch machinery: a method's spec, its params checks, the error
boundary, the call's context and services, the observer, ``rpc.discover``
and the dispatcher that runs them over jsonrpcserver."""
