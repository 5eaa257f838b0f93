"""One ASGI app per contender, each served by its own uvicorn process.

Separate processes keep each contender's peak RSS and ``/proc/<pid>/io`` counters its
own. Every app reads its settings from the environment (see ``settings``) and serves:

* ``POST /one``: one file in field ``file``, no limits;
* ``POST /many``: up to ten files in field ``file``;
* ``POST /limited``: one file with ``max_file_size`` = ``BENCH_LIMIT`` (413 beyond it).
"""
