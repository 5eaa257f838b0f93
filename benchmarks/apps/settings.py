"""Settings the runner passes to a contender's server process through its environment."""

from __future__ import annotations

import os
from pathlib import Path

MiB = 1024 * 1024

#: Directory the contender writes files to (emptied by the runner after each upload).
DESTINATION = Path(os.environ.get("BENCH_DESTINATION", "bench-uploads"))
#: ``max_file_size`` of the ``/limited`` route.
LIMIT = int(os.environ.get("BENCH_LIMIT", str(MiB)))
#: Most files the ``/many`` route takes.
MANY = 10
#: S3 contender only.
S3_BUCKET = os.environ.get("BENCH_S3_BUCKET", "bench")
S3_ENDPOINT = os.environ.get("BENCH_S3_ENDPOINT")
S3_PART_SIZE = int(os.environ.get("BENCH_S3_PART_SIZE", str(8 * MiB)))
