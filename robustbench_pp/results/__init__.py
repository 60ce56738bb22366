"""Result records and the one module that writes result files.

- :mod:`~robustbench_pp.results.schema`: :class:`CellRecord`, schema versioning.
- :mod:`~robustbench_pp.results.store`: atomic JSON Lines appends, torn-line recovery,
  resume checks, loading into pandas.
- :mod:`~robustbench_pp.results.tables`: records -> error tables and references for metrics.
- :mod:`~robustbench_pp.results.provenance`: versions, commit, device, command line.
"""

from robustbench_pp.results.schema import (
    IDENTITY_PROVENANCE,
    REQUIRED_PROVENANCE,
    SCHEMA_VERSION,
    CellRecord,
    RecordError,
    encode_correct_mask,
)
from robustbench_pp.results import provenance
from robustbench_pp.results.merge import MergeError, merge_shards
from robustbench_pp.results.store import (
    ResultsFileError,
    TornLineWarning,
    append_records,
    completed_cells,
    describe_mismatch,
    identity,
    load_results,
    read_records,
    run_identity,
    write_records,
)
from robustbench_pp.results.tables import (
    ALEXNET_REFERENCE,
    IncompleteRunError,
    Reference,
    RunTable,
    is_imagenet_c,
    reference_from_run,
    run_table,
    summarize_run,
)

__all__ = [
    "ALEXNET_REFERENCE",
    "IDENTITY_PROVENANCE",
    "REQUIRED_PROVENANCE",
    "SCHEMA_VERSION",
    "CellRecord",
    "IncompleteRunError",
    "RecordError",
    "Reference",
    "ResultsFileError",
    "RunTable",
    "TornLineWarning",
    "append_records",
    "completed_cells",
    "describe_mismatch",
    "encode_correct_mask",
    "identity",
    "merge_shards",
    "MergeError",
    "provenance",
    "is_imagenet_c",
    "load_results",
    "read_records",
    "reference_from_run",
    "run_identity",
    "run_table",
    "summarize_run",
    "write_records",
]
