"""Commands for publishers and operators that need the daemon's code.

They plug into the ``coffer`` CLI through the ``coffer.commands`` entry-point
group (see :mod:`coffer.cli`), so the client package never imports cofferd.
"""
