"""The process-wide executor for model inference, sized to the cores.

Inference never runs on the event loop; one pool shared by all calls keeps the machine busy
without oversubscribing it.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import cache


@cache
def inference_executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="inference")
