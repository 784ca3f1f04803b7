"""Handlers: the REST api, the render worker, the reducer and the watchdog. Each turns a
request or a message into calls of the services and the scheduler. May import the
services and everything below them; never an adapter or the tools."""
