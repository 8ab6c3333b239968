"""``fingerd irc``: the finger service on IRC (the Twisted tutorial's "Announce on IRC Too").

Modules: message.py (RFC 2812 lines: parse, format; pure), text.py (cleaning and splitting
what the bot says; pure), flood.py (token bucket, per-asker queues; pure), config.py (``[irc]``),
client.py (the connection on asyncio), bot.py (finger queries in, answers out), main.py (the
process: signals, reload, readiness).

Why our own ~250 lines of protocol instead of a library (README.md, "Finger on IRC", has the
figures): the bot must run on Debian bookworm's python3 from the .deb, so only Debian's IRC
libraries count, and none fits.

- ``python3-irc`` 8.5.3 (jaraco's irc of 2013): a select() loop with threads, no asyncio;
  TLS through ``ssl.wrap_socket`` (deprecated, gone in Python 3.12) with no certificate check;
  no SASL but a raw CAP command, no flood control; imports ``pkg_resources`` to learn its own
  version: ``import irc.client`` costs 2.3x the CPU of all of ``fingerd irc``'s imports
  (asyncio and ssl included; bench/irc_imports.py).
- ``python3-pydle`` 0.9.4: asyncio, but its ``connect()`` fails on Python 3.11 (it passes the
  ``loop=`` argument that asyncio dropped in 3.10: ``TypeError``).
- ``python3-pyrcb2`` 0.6.2: asyncio and SASL, but it owns the connection's life
  (``run(coroutine)`` ends with the connection: no reconnect or backoff), its flood control is a
  delay that grows with the backlog (unbounded, not per asker), and it is 7,000 lines (a
  grapheme table of 3,200) for the part the bot needs; its import alone costs about what all
  of ``fingerd irc`` does.
- On PyPI (irc 20 with asyncio, bottom, irc3, ircrobots/irctokens) nothing is in bookworm.

What the bot needs of IRC is small: parse and format RFC 2812 lines (message.py, tested with
hypothesis), register, PING/PONG, nick collisions, JOIN, SASL PLAIN. Flood control, per-asker
fairness, output cleaning and reconnecting had to be written for any of these libraries.
"""
