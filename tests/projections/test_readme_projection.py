"""The README's projection example runs as written and builds the documents it says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from projections.testkit import ProjectionSandbox

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_projection_example_builds_its_board() -> None:
    section = README.read_text().split("## Write a projection", 1)[1]
    block = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    namespace: dict[str, Any] = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    box = ProjectionSandbox(namespace["Board"]())
    box.given("Lot-vase", "BidAccepted", bidder="bob", amount=10)
    box.given("Lot-vase", "BidAccepted", bidder="cat", amount=15)
    assert box.document("vase") == {"_id": "vase", "high_amount": 15, "high_bidder": "cat", "bid_count": 2,
                                    "recent": [{"bidder": "bob", "amount": 10}, {"bidder": "cat", "amount": 15}]}
