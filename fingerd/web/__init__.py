"""The web view and WebFinger: the finger service over HTTP (``fingerd web``).

One long-running process (``fingerd-web.socket``, ``Accept=no``) answers

- ``GET /NAME``: the finger answer for NAME, as a small HTML page, ``text/plain`` (exactly what
  finger sends) or JSON (``{"user": …, "answer": …}``); ``GET /``: the user list or a form;
- ``GET /.well-known/webfinger?resource=acct:NAME@HOST``: a JRD (RFC 7033).

Every answer comes from the same :class:`fingerd.service.FingerService` as finger's, so the
same backends, policy and output filter apply, and the text is the same.

- settings.py   the ``[web]`` table, checked at load
- pages.py      what a page, a text or a JSON answer looks like (pure, no I/O)
- webfinger.py  RFC 7033: the ``resource`` parameter, the JRD (pure, no I/O)
- routes.py     one HTTP request -> one finger query -> one response (pure, no I/O)
- connection.py one HTTP/1.1 connection, framed by h11: limits, deadlines, the journal
- server.py     the process: listeners, connection caps, reload, stop
"""
