"""The report's one inline script, kept here so the page's Content-Security-Policy can pin
its hash: a script injected through data (it cannot be, with autoescaping, but defence in
depth is cheap) would be refused by the browser."""

from __future__ import annotations

import base64
import hashlib

#: Sortable tables (click a header; empty cells always sort last) and the dataset filter.
SCRIPT = """
(function () {
  "use strict";
  function cellKey(cell) {
    var value = cell.getAttribute("data-value");
    return value === null ? cell.textContent.trim() : value;
  }
  function sortBy(table, header, column) {
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    var numeric = header.getAttribute("data-type") === "number";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (first, second) {
      var a = cellKey(first.cells[column]), b = cellKey(second.cells[column]);
      if (numeric) {
        var x = a === "" ? NaN : Number(a), y = b === "" ? NaN : Number(b);
        if (isNaN(x) || isNaN(y)) { return isNaN(x) - isNaN(y); }
        return ascending ? x - y : y - x;
      }
      return ascending ? a.localeCompare(b) : b.localeCompare(a);
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, column) {
      header.addEventListener("click", function () { sortBy(table, header, column); });
      header.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortBy(table, header, column); }
      });
    });
  });
  var filter = document.getElementById("dataset-filter");
  if (filter) {
    filter.addEventListener("change", function () {
      document.querySelectorAll("[data-dataset]").forEach(function (element) {
        element.hidden = filter.value !== "" && element.getAttribute("data-dataset") !== filter.value;
      });
    });
  }
})();
"""


def script_hash(script: str = SCRIPT) -> str:
    """The CSP source expression (``'sha256-...'``) allowing exactly ``script``."""
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


#: No network at all: images only from data: URIs, styles inline, the one pinned script.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src {script_hash()}; "
    "base-uri 'none'; form-action 'none'"
)
