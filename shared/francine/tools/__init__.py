"""Entry points and tools: the command line, the REST client, the local stack, and the
wiring that builds the Google adapters for a process (``wiring``). Everything may be
imported from here; nothing below imports it."""
