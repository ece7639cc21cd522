"""SQL normalization: literals out, shape in.

Every statement that leaves the process (span attribute, log record, finding, stats
endpoint, metric label) goes through :func:`normalize` first: string, numeric, hex and
dollar-quoted literals become ``?``, bind placeholders of every DB-API paramstyle become
``?``, double-quoted values become ``?`` unless the database's double quotes are identifiers
(PostgreSQL, Oracle, ...: :data:`QUOTED_IDENTIFIERS`), ``IN (...)`` lists and multi-row
``VALUES`` collapse to one element, comments go, whitespace folds.  The same query shape
thus always normalizes to the same text, which is what N+1 detection groups by.

:func:`classify` extracts ``db.operation.name`` (SELECT, INSERT, ...) and
``db.collection.name`` (the first table the statement names).  Both are cached: a
SQLAlchemy app sends the same few hundred statement strings over and over.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: One left-to-right pass over everything that can hide a literal, so a quote inside a
#: comment, a comment marker inside a string or an apostrophe inside a quoted identifier
#: cannot shift what the other rules see.  Unterminated forms run to the end of the text
#: (a statement cut at MAX_STATEMENT, or malformed), so their tail is never exported.
_LEXEMES = re.compile(
    r"""(?=[-/$'"EeXxBbNn])  # cheap first-character filter; the alternatives follow
      (?:(?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
      |(?P<dollar>(?<![\w$])\$(?P<tag>[A-Za-z_]\w*|)\$.*?(?:\$(?P=tag)\$|\Z))
      |(?P<estring>(?<![\w$])[Ee]'(?:[^'\\]|\\.|'')*(?:'|\Z))
      |(?P<string>(?:(?<![\w$])[XxBbNn])?'(?:[^']|'')*(?:'|\Z))
      |(?P<quoted>"(?:[^"]|"")*(?P<closed>")?))""",
    re.S | re.X,
)
#: A double-quoted token right after one of these is a value (MySQL's default string
#: quotes), not an identifier: it is replaced too, except for :data:`QUOTED_IDENTIFIERS`.
_VALUE_BEFORE = re.compile(
    r"(?:[=<>!(,]|\b(?:LIKE|ILIKE|IN|VALUES|BETWEEN|AND|OR|NOT|IS|THEN|ELSE|WHEN))\s*$", re.I
)
_PLACEHOLDERS = re.compile(r"%\(\w+\)s|%s|(?<![:\w]):\w+|\$\d+|\?")
_NUMBERS = re.compile(r"(?<![\w.\"`])[-+]?(?:0[xX][0-9a-fA-F]+|\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+)(?![\w\"`])")
_IN_LIST = re.compile(r"\bIN\s*\(\s*\?(?:\s*,\s*\?)*\s*\)", re.I)
_VALUES_ROWS = re.compile(r"(\(\s*\?(?:\s*,\s*\?)*\s*\))(?:\s*,\s*\(\s*\?(?:\s*,\s*\?)*\s*\))+")
_SPACES = re.compile(r"\s+")
_NAME = r"(?:\"[^\"]+\"|`[^`]+`|\[[^\]]+\]|[A-Za-z_][\w$]*)"
_IDENT = _NAME + r"(?:\s*\.\s*" + _NAME + ")?"
_TABLE_AFTER = {
    "SELECT": re.compile(r"\bFROM\s+(" + _IDENT + ")", re.I),
    "DELETE": re.compile(r"\bFROM\s+(" + _IDENT + ")", re.I),
    "INSERT": re.compile(r"\bINTO\s+(" + _IDENT + ")", re.I),
    "REPLACE": re.compile(r"\bINTO\s+(" + _IDENT + ")", re.I),
    "UPDATE": re.compile(r"^\s*UPDATE\s+(?:OR\s+\w+\s+)?(" + _IDENT + ")", re.I),
    "MERGE": re.compile(r"\bINTO\s+(" + _IDENT + ")", re.I),
}
_MAIN_VERB = re.compile(r"\)\s*(SELECT|INSERT|UPDATE|DELETE|MERGE)\b", re.I)
_SUBQUERY_FROM = re.compile(r"^\(")
#: ``db.system.name`` of the databases whose double quotes are identifiers, never strings
#: (standard SQL): their "..." tokens are kept.  Everywhere else (MySQL and MariaDB without
#: ANSI_QUOTES, BigQuery, Spark, a system we do not know) a double-quoted token where a value
#: can stand is a string, possibly a secret, and becomes ``?``.  Not SQLite: it runs
#: ``WHERE password = "hunter2"`` with "hunter2" as a string when no column has that name (its
#: deprecated fallback, on in Python's sqlite3), so its raw SQL keeps the value rule.
QUOTED_IDENTIFIERS = frozenset(
    {"postgresql", "oracle.db", "cockroachdb", "redshift", "duckdb", "snowflake", "trino"}
)
#: Statements longer than this are cut before normalizing (and marked), so a pathological
#: multi-megabyte statement costs bounded time and memory.
MAX_STATEMENT = 4096


@dataclass(frozen=True, slots=True)
class Shape:
    """A normalized statement with its operation and table."""

    text: str
    operation: str
    collection: str


def _lexeme(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind == "comment":
        return " "
    if kind == "quoted" and match.group("closed") and (
        # "table"."column" (Django's select lists): a qualifier, never a value
        match.string.startswith(".", match.end())
        or not _VALUE_BEFORE.search(match.string, max(0, match.start() - 12), match.start())
    ):
        return match.group()
    return "?"


def _lexeme_quoted_identifiers(match: re.Match[str]) -> str:
    """:func:`_lexeme` for :data:`QUOTED_IDENTIFIERS`: every closed "..." is a name, kept."""
    kind = match.lastgroup
    if kind == "comment":
        return " "
    if kind == "quoted" and match.group("closed"):
        return match.group()
    return "?"


def _blank_from_first(sql: str, quote: str) -> str:
    """Replace everything from the first ``quote`` on by one ``?``.

    Used only when a backslash precedes a quote: one reading (standard SQL) ends a string
    there, the other (MySQL, PostgreSQL ``E''``) does not, so any quote after it may open
    or close a string and any text after the first quote may be a literal.
    """
    return sql[: sql.find(quote)] + "?"


def normalize(statement: str, system: str = "") -> str:
    """Return ``statement`` with every literal replaced by ``?`` (never the values).

    ``system`` is the ``db.system.name`` the statement runs on: it decides whether
    double-quoted tokens are identifiers (kept) or may be values (replaced; the default).
    """
    if not isinstance(statement, str):  # a driver handing us bytes: never fail, never leak
        raw: object = statement
        statement = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
    sql = statement if len(statement) <= MAX_STATEMENT else statement[:MAX_STATEMENT]
    # A backslash before a quote is an escape in MySQL and a plain character in standard
    # SQL: no single reading is safe for both, so everything from the first quote goes.
    if "\\'" in sql:
        sql = _blank_from_first(sql, "'")
    if '\\"' in sql:
        sql = _blank_from_first(sql, '"')
    if "'" in sql or '"' in sql or "-" in sql or "/" in sql or "$" in sql:
        sql = _LEXEMES.sub(_lexeme_quoted_identifiers if system in QUOTED_IDENTIFIERS else _lexeme, sql)
    sql = _PLACEHOLDERS.sub("?", sql)
    sql = _NUMBERS.sub("?", sql)
    sql = _IN_LIST.sub("IN (?)", sql)
    sql = _VALUES_ROWS.sub(r"\1", sql)
    sql = _SPACES.sub(" ", sql).strip()
    if len(statement) > MAX_STATEMENT:
        sql += " ..."
    if not sql.isascii():  # lone surrogates (undecodable bytes) would make the OTLP encoder drop it
        sql = sql.encode("utf-8", "replace").decode("utf-8")
    return sql


def _strip_quotes(name: str) -> str:
    parts = [p.strip().strip('"`[]') for p in name.split(".")]
    return ".".join(p for p in parts if p)


def classify(normalized: str) -> tuple[str, str]:
    """(operation, collection) of a normalized statement; empty strings when unknown."""
    head = normalized.lstrip("( ")
    verb = head.split(" ", 1)[0].rstrip(";").upper() if head else ""  # "BEGIN;" (asyncpg) is BEGIN
    if verb == "WITH":
        match = _MAIN_VERB.search(normalized)
        verb = match.group(1).upper() if match else "WITH"
        body = normalized[match.start() + 1 :] if match else normalized
    else:
        body = normalized
    pattern = _TABLE_AFTER.get(verb)
    table = ""
    if pattern is not None:
        match = pattern.search(body)
        if match:
            table = _strip_quotes(match.group(1))
    if not verb.isalpha():
        verb = ""
    return verb, table


class ShapeCache:
    """Bounded cache statement -> :class:`Shape` (cleared whole when full: cheap and bounded).

    One runtime's statements may run on several systems, and one text may normalize two ways
    (see :data:`QUOTED_IDENTIFIERS`): each way has its own dict, so a shape never crosses over.
    """

    def __init__(self, max_entries: int = 2048) -> None:
        self.max_entries = max_entries
        #: statements of systems where "..." may be a value (and of unknown systems)
        self._cache: dict[str, Shape] = {}
        #: statements of :data:`QUOTED_IDENTIFIERS` systems
        self._quoted_identifiers: dict[str, Shape] = {}
        self.evictions = 0

    def shape(self, statement: str, system: str = "") -> Shape:
        cache = self._quoted_identifiers if system in QUOTED_IDENTIFIERS else self._cache
        shape = cache.get(statement)
        if shape is not None:
            return shape
        text = normalize(statement, system)
        operation, collection = classify(text)
        shape = Shape(text, operation, collection)
        if len(self._cache) + len(self._quoted_identifiers) >= self.max_entries:
            self._cache.clear()
            self._quoted_identifiers.clear()
            self.evictions += 1
        # Only cache statements without inline literals' variety: keying on the raw text is
        # what makes hits cheap; a flood of distinct literal-laden statements just cycles.
        cache[statement] = shape
        return shape
