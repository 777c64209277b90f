"""The methods, a module per concept, each with its ``SPECS``; none imports
another (what two share lives in ``rpc/dispatch/``)."""
