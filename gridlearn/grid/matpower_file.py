"""`read_m_file`: a MATPOWER ``.m`` case file read as MATPOWER reads it, without MATLAB or ``eval``.

A case file is a MATLAB function that fills a struct ``mpc``. Besides the data matrices,
MATPOWER's own files run statements after them, which ``loadcase`` executes: unit
conversions on whole columns (``mpc.bus(:, [PD, QD]) = mpc.bus(:, [PD, QD]) / 1e3;``,
kW -> MW in most distribution feeders; ohms -> per unit through ``Vbase``/``Sbase``),
scalar arithmetic (``mpc.baseMVA = 50/3;``), and the index names of MATPOWER's
``idx_bus``/``idx_brch``/``idx_gen``/``idx_cost``. A reader that skips them loads
case33bw with 3,715 MW of load instead of 3.715 MW. This module evaluates exactly that
subset with a small recursive-descent parser over numpy: numbers, ``Inf``/``NaN``,
variables, the index names, ``mpc.field`` and ``mpc.table(rows, cols)`` reads and
assignments (``:``, a scalar, or a ``[list]`` of columns), ``+ - * / ^`` (and their
element-wise forms), unary minus, parentheses, and the functions in `_FUNCTIONS`.
``if`` / ``elseif`` / ``else`` / ``end`` blocks are followed as MATLAB would, with conditions in the
same subset (case8387pegase: ``fixed = 0; ... if fixed ... end``): a branch not taken is skipped
unread, a branch taken is read like the rest. Any other statement (``for``, ``while``, ``find``, a
call to another function, ...) that would run raises `DataError` naming the file and line: it is
never skipped and never executed.

`MatpowerCase` keeps the tables as the file defines them (MATPOWER's external numbering,
every row, out-of-service ones included), with the line each data row came from, so that
errors can name the row a user has to fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gridlearn.errors import DataError

# MATPOWER's column names (idx_bus.m, idx_brch.m, idx_gen.m, idx_cost.m), 1-based as in MATLAB.
_IDX = {
    "idx_bus": dict(PQ=1, PV=2, REF=3, NONE=4, BUS_I=1, BUS_TYPE=2, PD=3, QD=4, GS=5, BS=6, BUS_AREA=7, VM=8,
                    VA=9, BASE_KV=10, ZONE=11, VMAX=12, VMIN=13, LAM_P=14, LAM_Q=15, MU_VMAX=16, MU_VMIN=17),
    "idx_brch": dict(F_BUS=1, T_BUS=2, BR_R=3, BR_X=4, BR_B=5, RATE_A=6, RATE_B=7, RATE_C=8, TAP=9, SHIFT=10,
                     BR_STATUS=11, PF=14, QF=15, PT=16, QT=17, MU_SF=18, MU_ST=19, ANGMIN=12, ANGMAX=13,
                     MU_ANGMIN=20, MU_ANGMAX=21),
    "idx_gen": dict(GEN_BUS=1, PG=2, QG=3, QMAX=4, QMIN=5, VG=6, MBASE=7, GEN_STATUS=8, PMAX=9, PMIN=10, PC1=11,
                    PC2=12, QC1MIN=13, QC1MAX=14, QC2MIN=15, QC2MAX=16, RAMP_AGC=17, RAMP_10=18, RAMP_30=19,
                    RAMP_Q=20, APF=21, MU_PMAX=22, MU_PMIN=23, MU_QMAX=24, MU_QMIN=25),
    "idx_cost": dict(PW_LINEAR=1, POLYNOMIAL=2, MODEL=1, STARTUP=2, SHUTDOWN=3, NCOST=4, COST=5),
}
_FUNCTIONS = {"sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos,
              "atan": np.arctan, "sqrt": np.sqrt, "exp": np.exp, "log": np.log, "abs": np.abs}
_CONSTANTS = {"Inf": np.inf, "inf": np.inf, "NaN": np.nan, "nan": np.nan, "pi": np.pi}
#: Tables a case file defines and gridlearn reads; other numeric ``mpc`` fields are kept as read.
TABLES = ("bus", "gen", "branch", "gencost")
#: Minimum columns of each table (MATPOWER's case format version 2).
MIN_COLUMNS = {"bus": 13, "gen": 10, "branch": 11}


@dataclass
class MatpowerCase:
    """The ``mpc`` struct of a case file: ``baseMVA`` and numeric tables, as the file leaves them.

    ``tables`` maps ``bus``/``gen``/``branch``/``gencost`` (and any other numeric field) to
    float arrays; ``row_lines[table][i]`` is the file line of row ``i``; ``strings`` holds
    string fields (``version``) and cell arrays (``bus_name``) as lists of strings.
    """

    path: str
    base_mva: float
    tables: dict[str, np.ndarray]
    row_lines: dict[str, list[int]] = field(default_factory=dict)
    strings: dict[str, object] = field(default_factory=dict)

    def where(self, table: str, row: int) -> str:
        """``"case.m line 42 (bus row 3)"``: where a row comes from, for error messages."""
        lines = self.row_lines.get(table, [])
        line = f" line {lines[row]}" if row < len(lines) else ""
        return f"{Path(self.path).name}{line} ({table} row {row + 1})"


# ---------------------------------------------------------------------------- lexing
_NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_TOKEN = re.compile(rf"\s*(?:(?P<num>{_NUMBER})|(?P<name>[A-Za-z_]\w*)|(?P<str>'[^']*')|(?P<op>\.\*|\./|\.\^|[-+*/^(),:;\[\]=.{{}}]))")


def _strip_comment(line: str) -> str:
    """The line without its ``%`` comment (a ``%`` inside a quoted string is kept)."""
    out, quoted = [], False
    for ch in line:
        if ch == "'":
            quoted = not quoted
        elif ch == "%" and not quoted:
            break
        out.append(ch)
    return "".join(out)


def _statements(text: str) -> list[tuple[int, str]]:
    """Split the file into (first line number, statement) pairs.

    ``...`` continues a line; ``;`` or a newline ends a statement, except inside ``[ ]``
    or ``{ }``, where it separates rows (kept, so a matrix literal is one statement).
    """
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    start, depth = 0, 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw)
        cont = "..." in line
        if cont:
            line = line[: line.index("...")]
        if not buf:
            start = lineno
        for ch in line:
            if ch in "[{":
                depth += 1
            elif ch in "]}":
                depth -= 1
            if ch == ";" and depth == 0:
                stmt = "".join(buf).strip()
                if stmt:
                    out.append((start, stmt))
                buf, start = [], lineno
                continue
            buf.append(ch)
        if cont:
            continue
        if depth > 0:
            buf.append(f"\n@{lineno + 1}\n")  # row break inside a matrix; the marker is the next row's line
            continue
        stmt = "".join(buf).strip()
        if stmt:
            out.append((start, stmt))
        buf = []
    if "".join(buf).strip():
        out.append((start, "".join(buf).strip()))
    return out


class _Parser:
    """Recursive descent over one statement's tokens, evaluating with numpy."""

    def __init__(self, text: str, reader: "_Reader"):
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise reader.error(f"cannot read {text[pos:pos + 20]!r}")
            pos = m.end()
            kind = m.lastgroup
            self.tokens.append((kind, m.group(kind)))
        self.i = 0
        self.r = reader

    def peek(self, k: int = 0) -> tuple[str, str] | None:
        j = self.i + k
        return self.tokens[j] if j < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise self.r.error(f"expected {value!r}" if value else "unexpected end of statement")
        self.i += 1
        return tok

    def at(self, value: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[1] == value and tok[0] in ("op",)

    def done(self) -> bool:
        return self.i >= len(self.tokens)

    # expression := term (('+'|'-') term)*
    def expr(self):
        v = self.term()
        while self.at("+") or self.at("-"):
            op = self.take()[1]
            w = self.term()
            v = v + w if op == "+" else v - w
        return v

    def term(self):
        v = self.unary()
        while self.at("*") or self.at("/") or self.at(".*") or self.at("./"):
            op = self.take()[1]
            w = self.unary()
            if op in ("*", "/") and np.ndim(v) and np.ndim(w):
                # MATLAB's * and / are matrix products here; case files only scale by scalars.
                raise self.r.error(f"matrix {'product' if op == '*' else 'division'} of two arrays is not supported")
            v = v * w if op in ("*", ".*") else v / w
        return v

    def unary(self):
        if self.at("-"):
            self.take()
            return -self.unary()
        if self.at("+"):
            self.take()
            return self.unary()
        return self.power()

    def power(self):
        v = self.atom()
        while self.at("^") or self.at(".^"):
            op = self.take()[1]
            negate = self.at("-")
            if negate:
                self.take()
            w = -self.atom() if negate else self.atom()
            if op == "^" and np.ndim(v):
                raise self.r.error("matrix power of an array is not supported")
            v = np.power(v, w)
        return v

    def atom(self):
        tok = self.take()
        kind, val = tok
        if kind == "num":
            return float(val)
        if val == "(":
            v = self.expr()
            self.take(")")
            return v
        if val == "[":
            items = [self.expr()]
            while self.at(","):
                self.take()
                items.append(self.expr())
            while not self.at("]"):  # space-separated list: [BR_R BR_X]
                items.append(self.expr())
            self.take("]")
            return np.array([float(x) for x in items])
        if kind != "name":
            raise self.r.error(f"unexpected {val!r}")
        if val == "mpc":
            return self.mpc_read()
        if val in _FUNCTIONS:
            self.take("(")
            v = self.expr()
            self.take(")")
            return _FUNCTIONS[val](v)
        if val in self.r.variables:
            return self.r.variables[val]
        if val in _CONSTANTS:
            return _CONSTANTS[val]
        raise self.r.error(f"unknown name {val!r} (only arithmetic on mpc fields, numbers and variables is read)")

    def mpc_read(self):
        self.take(".")
        name = self.take()[1]
        if self.at("("):
            table = self.r.table(name)
            rows, cols = self.index(table)
            return table[np.ix_(rows, cols)] if not (np.ndim(rows) == 0 or np.ndim(cols) == 0) else table[rows, cols]
        if name == "baseMVA":
            return self.r.base_mva
        if name in self.r.tables:
            return self.r.tables[name]
        raise self.r.error(f"mpc.{name} is not defined here")

    def index(self, table: np.ndarray):
        """``(rows, cols)`` of ``(r, c)``: slices/arrays of 0-based positions."""
        self.take("(")
        rows = self.one_index(table.shape[0])
        self.take(",")
        cols = self.one_index(table.shape[1])
        self.take(")")
        return rows, cols

    def one_index(self, n: int):
        if self.at(":"):
            self.take()
            return np.arange(n)
        v = np.asarray(self.expr(), dtype=float)
        if np.any(v != np.round(v)) or np.any(v < 1) or np.any(v > n):
            raise self.r.error(f"index {v.tolist()} is out of range 1..{n}")
        idx = v.astype(np.int64) - 1
        return int(idx) if idx.ndim == 0 else idx


class _Reader:
    def __init__(self, path: Path):
        self.path = path
        self.line = 0
        self.variables: dict[str, object] = {}
        self.tables: dict[str, np.ndarray] = {}
        self.row_lines: dict[str, list[int]] = {}
        self.strings: dict[str, object] = {}
        self.base_mva: float | None = None

    def error(self, what: str) -> DataError:
        return DataError(f"{self.path.name} line {self.line}: {what}; gridlearn reads the data matrices and "
                         "arithmetic on mpc fields (see gridlearn.grid.matpower_file)")

    def table(self, name: str) -> np.ndarray:
        if name not in self.tables:
            raise self.error(f"mpc.{name} is used before it is defined")
        return self.tables[name]

    def run(self, stmt: str) -> None:
        s = stmt.strip()
        if re.fullmatch(r"function\s+(\w+\s*=\s*)?\w+(\s*\(.*\))?", s):
            return
        m = re.fullmatch(r"\[([\w\s,]+)\]\s*=\s*(idx_bus|idx_brch|idx_gen|idx_cost)", s)
        if m:
            names = [n for n in re.split(r"[\s,]+", m.group(1)) if n]
            known = _IDX[m.group(2)]
            for n in names:
                if n not in known:
                    raise self.error(f"{n} is not a column name of {m.group(2)}")
                self.variables[n] = float(known[n])
            return
        m = re.fullmatch(r"mpc\.(\w+)\s*=\s*(\[([^\[\]]*)\]|\{([^{}]*)\})", s, flags=re.S)
        if m:  # a data matrix or a cell array of names
            bracket, body = ("[", m.group(3)) if m.group(3) is not None else ("{", m.group(4))
            self.literal(m.group(1), bracket, body)
            return
        m = re.fullmatch(r"mpc\.(\w+)\s*=\s*'([^']*)'", s)
        if m:
            self.strings[m.group(1)] = m.group(2)
            return
        lhs, eq, rhs = s.partition("=")
        if not eq or rhs.startswith("="):
            raise self.error(f"cannot read the statement {s[:60]!r}")
        value = _Parser(rhs, self).expr_all()
        lhs = lhs.strip()
        if re.fullmatch(r"[A-Za-z_]\w*", lhs):
            if lhs in ("mpc",) or lhs in _CONSTANTS:
                raise self.error(f"cannot assign to {lhs}")
            self.variables[lhs] = value
            return
        m = re.fullmatch(r"mpc\.(\w+)", lhs)
        if m:
            if m.group(1) == "baseMVA":
                if np.ndim(value) != 0:
                    raise self.error("mpc.baseMVA must be a scalar")
                self.base_mva = float(value)
            else:
                self.tables[m.group(1)] = np.atleast_2d(np.asarray(value, dtype=float)).copy()
                self.row_lines[m.group(1)] = [self.line] * self.tables[m.group(1)].shape[0]
            return
        m = re.fullmatch(r"mpc\.(\w+)\s*(\(.*\))", lhs, flags=re.S)
        if m:
            table = self.table(m.group(1))
            p = _Parser(m.group(2), self)
            rows, cols = p.index(table)
            if not p.done():
                raise self.error(f"cannot read the index {m.group(2)!r}")
            target = table[np.ix_(np.atleast_1d(rows), np.atleast_1d(cols))]
            value = np.asarray(value, dtype=float)
            if value.ndim and value.size == target.size:
                value = value.reshape(target.shape)  # a column read as a vector, written back as one
            try:
                new = np.broadcast_to(value, target.shape)
            except ValueError as exc:
                raise self.error(f"a value of shape {np.shape(value)} cannot fill mpc.{m.group(1)}{m.group(2)}") from exc
            table[np.ix_(np.atleast_1d(rows), np.atleast_1d(cols))] = new
            return
        raise self.error(f"cannot read the statement {s[:60]!r}")

    def literal(self, name: str, bracket: str, body: str) -> None:
        """A matrix ``[ ... ]`` (rows by newline or ``;``) or a cell array ``{ ... }``."""
        rows: list[list[float]] = []
        lines: list[int] = []
        texts: list[str] = []
        line = self.line
        for chunk in re.split(r"(\n@\d+\n)", body):
            m = re.fullmatch(r"\n@(\d+)\n", chunk)
            if m:
                line = int(m.group(1))
                continue
            for part in chunk.split(";"):
                part = part.strip()
                if not part:
                    continue
                if bracket == "{":
                    texts += re.findall(r"'([^']*)'", part)
                    continue
                values = []
                for item in re.split(r"[\s,]+", part):
                    if not item:
                        continue
                    try:
                        values.append(float(item))
                    except ValueError:
                        # An entry such as 135/sqrt(3) (case533mt) or -Inf: a scalar expression.
                        self.line = line
                        value = _Parser(item, self).expr_all()
                        if np.ndim(value) != 0:
                            raise self.error(f"mpc.{name}: entry {item!r} is not a scalar") from None
                        values.append(float(value))
                rows.append(values)
                lines.append(line)
        if bracket == "{":
            self.strings[name] = texts
            return
        widths = {len(r) for r in rows}
        if len(widths) > 1:
            counts = [len(r) for r in rows]
            bad = next(i for i, c in enumerate(counts) if c != counts[0])
            self.line = lines[bad]
            raise self.error(f"mpc.{name} row {bad + 1} has {counts[bad]} columns, row 1 has {counts[0]}")
        self.tables[name] = np.array(rows, dtype=float).reshape(len(rows), widths.pop() if widths else 0)
        self.row_lines[name] = lines


#: MATLAB keywords that open a block closed by ``end``.
_OPENERS = ("if", "for", "while", "switch", "try", "parfor")


class _Blocks:
    """The ``if``/``elseif``/``else``/``end`` nesting around the statements being read.

    One entry per open block: "run" (the branch being read), "wait" (condition false so far: a later
    ``elseif``/``else`` may run), "done" (a branch was taken, or the block sits inside one not read).
    Blocks other than ``if`` are only tracked inside a skipped region (so that their ``end`` is
    matched); where they would run, they are refused."""

    def __init__(self, reader: _Reader):
        self.r = reader
        self.stack: list[tuple[str, int]] = []

    @property
    def running(self) -> bool:
        return all(state == "run" for state, _ in self.stack)

    def _condition(self, text: str) -> bool:
        value = np.asarray(_Parser(text, self.r).expr_all(), dtype=float)
        return bool(value.size) and bool(np.all(value != 0))  # MATLAB: non-empty and all nonzero

    def control(self, s: str) -> bool:
        """Handle ``s`` if it is a block keyword (True), else leave it to the reader (False)."""
        m = re.fullmatch(r"(\w+)\b\s*(.*?)\s*[;,]?", s, flags=re.S)
        word, rest = (m.group(1), m.group(2)) if m else ("", "")
        if word == "if":
            if self.running:
                self.stack.append(("run" if self._condition(rest) else "wait", self.r.line))
            else:
                self.stack.append(("done", self.r.line))
            return True
        if word in ("elseif", "else"):
            if not self.stack:
                raise self.r.error(f"{word} without if")
            state, opened = self.stack.pop()
            parent = all(st == "run" for st, _ in self.stack)
            if state == "wait" and parent:
                state = "run" if word == "else" or self._condition(rest) else "wait"
            else:
                state = "done"
            self.stack.append((state, opened))
            return True
        if word == "end" and not rest:
            if self.stack:
                self.stack.pop()
            return True  # with no block open: the end of the case function
        if word in _OPENERS[1:]:
            if self.running:  # a loop or switch would have to run: not in the subset
                raise self.r.error(f"cannot read the statement {s[:60]!r} (no {word} blocks)")
            self.stack.append(("done", self.r.line))
            return True
        return False

    def close(self) -> None:
        if self.stack:
            self.r.line = self.stack[-1][1]
            raise self.r.error("this block has no end")


def _expr_all(self: _Parser):
    v = self.expr()
    if not self.done():
        raise self.r.error(f"unexpected {self.peek()[1]!r}")
    return v


_Parser.expr_all = _expr_all  # type: ignore[attr-defined]


def read_m_file(path: str | Path) -> MatpowerCase:
    """Read a MATPOWER case file (format version 2) into a `MatpowerCase`.

    Raises:
        DataError: the file is missing, a statement is outside the supported subset, a
            number is malformed, or ``baseMVA``/``bus``/``gen``/``branch`` is missing or
            has too few columns (each message names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"case file {path} does not exist")
    reader = _Reader(path)
    text = path.read_text(errors="replace")
    blocks = _Blocks(reader)
    for line, stmt in _statements(text):
        reader.line = line
        if not blocks.control(stmt.strip()) and blocks.running:
            reader.run(stmt)
    blocks.close()
    reader.line = 0
    if reader.strings.get("version", "2") != "2":
        raise DataError(f"{path.name}: MATPOWER case format version {reader.strings['version']!r}; only version 2 is read")
    if reader.base_mva is None:
        raise DataError(f"{path.name}: mpc.baseMVA is not defined")
    if not np.isfinite(reader.base_mva) or reader.base_mva <= 0:
        raise DataError(f"{path.name}: mpc.baseMVA must be a positive number, got {reader.base_mva}")
    for name, width in MIN_COLUMNS.items():
        if name not in reader.tables:
            raise DataError(f"{path.name}: mpc.{name} is not defined")
        if reader.tables[name].shape[1] < width:
            raise DataError(f"{path.name}: mpc.{name} has {reader.tables[name].shape[1]} columns, MATPOWER needs {width}")
    return MatpowerCase(path=str(path), base_mva=reader.base_mva, tables=reader.tables, row_lines=reader.row_lines,
                        strings=reader.strings)


__all__ = ["MatpowerCase", "read_m_file", "TABLES"]
