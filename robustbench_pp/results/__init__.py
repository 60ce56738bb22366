"""Result records and the one module that writes result files.

- :mod:`~robustbench_pp.results.schema`: :class:`CellRecord`, schema versioning.
- :mod:`~robustbench_pp.results.store`: locked, atomic JSON Lines appends, torn-line
  recovery, resume checks, loading into pandas.
- :mod:`~robustbench_pp.results.lines`: the bytes of a line, strict parsing, torn lines.
- :mod:`~robustbench_pp.results.tables`: records -> a run's error table (:class:`RunTable`).
- :mod:`~robustbench_pp.results.references`: the mCE normaliser of each dataset.
- :mod:`~robustbench_pp.results.summary`: a run's headline numbers and their intervals.
- :mod:`~robustbench_pp.results.pairing`: two runs over the same images, lined up for
  paired statistics (``rbpp compare``).
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
    result_files,
    run_identity,
    write_records,
    writer_lock,
)
from robustbench_pp.results.tables import IncompleteRunError, RunTable, load_run, run_table
from robustbench_pp.results.references import (
    ALEXNET_REFERENCE,
    Reference,
    choose_references,
    default_reference,
    is_imagenet_c,
    no_reference_note,
    reference_from_run,
)
from robustbench_pp.results.pairing import (
    IncomparableRunsError,
    RunComparison,
    compare_files,
    compare_runs_paired,
    pairing_problems,
)
from robustbench_pp.results.summary import (
    R_NET_FORMULA_NOTE,
    RunMetrics,
    mean_error_intervals,
    run_metrics,
    summarize_run,
)

__all__ = [
    "ALEXNET_REFERENCE",
    "IDENTITY_PROVENANCE",
    "REQUIRED_PROVENANCE",
    "R_NET_FORMULA_NOTE",
    "SCHEMA_VERSION",
    "CellRecord",
    "IncomparableRunsError",
    "IncompleteRunError",
    "MergeError",
    "RecordError",
    "Reference",
    "ResultsFileError",
    "RunComparison",
    "RunMetrics",
    "RunTable",
    "TornLineWarning",
    "append_records",
    "choose_references",
    "compare_files",
    "compare_runs_paired",
    "completed_cells",
    "default_reference",
    "describe_mismatch",
    "encode_correct_mask",
    "identity",
    "is_imagenet_c",
    "load_results",
    "load_run",
    "mean_error_intervals",
    "merge_shards",
    "no_reference_note",
    "pairing_problems",
    "provenance",
    "read_records",
    "reference_from_run",
    "result_files",
    "run_identity",
    "run_metrics",
    "run_table",
    "summarize_run",
    "write_records",
    "writer_lock",
]
