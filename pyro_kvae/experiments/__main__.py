# SPDX-License-Identifier: Apache-2.0
import os

# as examples/bouncing_ball.py: large CPU tensors on transparent huge pages
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from .cli import main  # noqa: E402

main()
