"""mmmos.runtime.report: `mmmos-report`, a self-contained HTML report of score rows, and `--filter` curation.

    from mmmos.runtime.report import parse_filter, parse_group_by
    keep = parse_filter("PQ>=6 and CE>=5")         # a safe expression language, never eval
    keep.matches({"PQ": 7.1, "CE": 5.5})           # True
    parse_group_by("auto").group_of({"path": "audiomos2025-track2-sys0v1wm-utt0dJodp.wav"})   # "sys0v1wm"

Like the rest of the runtime, nothing here imports torch.
"""

from .filter_expr import Filter, FilterSyntaxError, parse_filter
from .grouping import CHALLENGE_SYSTEM_RE, Grouper, parse_group_by

__all__ = ["CHALLENGE_SYSTEM_RE", "Filter", "FilterSyntaxError", "Grouper", "parse_filter", "parse_group_by"]
