"""The fault-injection suite's steady load (tests/chaos/harness.Load), run from inside the
node's network namespace, where the receiver Service's cluster IP routes as it does for any
client in the cluster (kube-proxy's rules are the node's):
``python -m tests.cluster.load URL RATE SECONDS OUT``. Writes {"accepted": [ids], "errors": {}}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tests.chaos.harness import Load


def main() -> None:
    url, rate, seconds, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    with Load(url, rate) as load:
        time.sleep(seconds)
    result = load.result
    Path(out).write_text(json.dumps({"accepted": result.accepted, "errors": result.errors}))


if __name__ == "__main__":
    main()
