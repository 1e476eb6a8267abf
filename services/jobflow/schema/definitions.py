"""What the migrations say each table is, and how a store's live tables differ from that.

Each store's dialect follows the statements that shape tables (CREATE, the ALTERs that add,
drop, retype, rename or move columns or change the key, DROP, RENAME) through every migration
in order, and so knows what the tables must look like once they are all applied: each table's
kind (ClickHouse: its engine), its columns in order with their types written as the store
prints them, and its key (ClickHouse: the sorting key; PostgreSQL: the primary key; ksqlDB: the
key columns). The store's targets read the same from the store itself (system.tables and
system.columns, pg_catalog, DESCRIBE); ``differences`` says where the two part.

Statements that change no definition (INSERT, CREATE INDEX, a TTL, ...) are passed over. A
statement that would change one in a way the model does not follow is an error: no check is
better than a wrong one, and the unit tests run every migration of the chart through its model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import ClassVar


class ModelError(Exception):
    """A statement that changes a definition in a way the model does not follow."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str | None  # as the store prints it; None: the statements do not say


@dataclass(frozen=True)
class Definition:
    kind: str
    columns: tuple[Column, ...] | None  # None: not known from the statements (a view)
    key: str | None  # None: not compared

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns or () if c.name == name), None)


def differences(
    expected: Mapping[str, Definition], live: Mapping[str, Definition | None]
) -> list[str]:
    """Each way the live definitions differ from the expected ones, one line each."""
    found: list[str] = []
    for name, want in expected.items():
        have = live.get(name)
        if have is None:
            found.append(f"{name}: missing")
            continue
        if have.kind != want.kind:
            found.append(f"{name}: is {have.kind}, the migrations say {want.kind}")
        if want.columns is not None and have.columns is not None:
            found += _column_differences(name, want.columns, have.columns)
        if want.key is not None and have.key is not None and want.key != have.key:
            found.append(f"{name}: key is ({have.key}), the migrations say ({want.key})")
    return found


def _described(column: Column) -> str:
    return f"{column.name} {column.type}" if column.type else column.name


def _column_differences(
    table: str, want: tuple[Column, ...], have: tuple[Column, ...]
) -> list[str]:
    wanted = {column.name: column for column in want}
    got = {column.name: column for column in have}
    found = [f"{table}: column {_described(c)} missing" for c in want if c.name not in got]
    found += [
        f"{table}: column {_described(c)} not in the migrations"
        for c in have
        if c.name not in wanted
    ]
    for column in want:
        live = got.get(column.name)
        if live and column.type is not None and live.type != column.type:
            found.append(
                f"{table}: column {column.name} is {live.type}, the migrations say {column.type}"
            )
    order_wanted = [c.name for c in want if c.name in got]
    order_live = [c.name for c in have if c.name in wanted]
    if order_wanted != order_live:
        found.append(
            f"{table}: columns in the order {', '.join(order_live)}, the migrations say "
            f"{', '.join(order_wanted)}"
        )
    return found


# Scanning SQL text ---------------------------------------------------------------------------

NAME = r"(?:`[^`]+`|\"[^\"]+\"|[\w$]+)(?:\s*\.\s*(?:`[^`]+`|\"[^\"]+\"|[\w$]+))*"
_FLAGS = re.IGNORECASE | re.DOTALL


def mask(text: str, brackets: str = "()") -> str:
    """``text`` with everything inside quotes and brackets blanked, the outermost brackets kept:
    a keyword or a comma found in it is at the top level of the original."""
    opening, closing = brackets[::2], brackets[1::2]
    out: list[str] = []
    depth = 0
    quote: str | None = None
    for char in text:
        if quote:
            out.append(" ")
            if char == quote:
                quote = None
        elif char in "'\"`":
            quote = char
            out.append(" ")
        elif char in opening:
            depth += 1
            out.append(char if depth == 1 else " ")
        elif char in closing:
            depth -= 1
            out.append(char if depth == 0 else " ")
        else:
            out.append(char if depth == 0 else " ")
    return "".join(out)


def split_top_level(text: str, brackets: str = "()") -> list[str]:
    """``text`` split at its top-level commas."""
    parts, start = [], 0
    for match in re.finditer(",", mask(text, brackets)):
        parts.append(text[start : match.start()].strip())
        start = match.end()
    parts.append(text[start:].strip())
    return [part for part in parts if part]


def search(pattern: str, text: str, brackets: str = "()") -> re.Match[str] | None:
    """``pattern`` at the top level of ``text`` (positions are the original's)."""
    return re.search(pattern, mask(text, brackets), _FLAGS)


def inside(text: str, brackets: str = "()") -> tuple[str, str]:
    """The content of the bracket ``text`` starts with (leading space aside), and what follows."""
    stripped = text.lstrip()
    if not stripped.startswith(brackets[0]):
        raise ModelError(f"expected {brackets[0]!r} at {stripped[:40]!r}")
    closing = mask(stripped, brackets).find(brackets[1])
    if closing < 0:
        raise ModelError(f"unbalanced {brackets[0]!r} in {stripped[:40]!r}")
    return stripped[1:closing], stripped[closing + 1 :]


def spaced(text: str) -> str:
    """An expression or a type in one canonical spacing: single spaces, none inside brackets,
    one after each comma (as ClickHouse and PostgreSQL print them)."""
    text = re.sub(r"\s+", " ", text.strip())
    text = re.sub(r"\s*,\s*", ", ", text)
    return re.sub(r"([(<])\s+|\s+([)>])", lambda m: m.group(1) or m.group(2), text)


def unwrapped(expression: str) -> str:
    """An expression without brackets around the whole of it: (id, status) is id, status."""
    expression = expression.strip()
    while expression.startswith("(") and mask(expression)[1:].find(")") == len(expression) - 2:
        expression = expression[1:-1].strip()
    return expression


def clickhouse_key(expression: str) -> str:
    """A sorting key as system.tables prints it: ORDER BY (id, status) is "id, status"."""
    key = spaced(unwrapped(expression))
    return "" if key == "tuple()" else key


# Dialects ------------------------------------------------------------------------------------


class Model:
    """The definitions a sequence of statements leaves, in one store's dialect: a statement that
    matches CREATE (groups ``what``, ``name``) defines a table, one that matches ALTER (group
    ``name``, its actions after it) changes one the migrations defined, any other goes to
    ``other`` (DROP, RENAME; the rest changes no definition)."""

    brackets: ClassVar[str] = "()"
    CREATE: ClassVar[str]
    ALTER: ClassVar[str]

    def __init__(self) -> None:
        self.definitions: dict[str, Definition] = {}

    def name(self, text: str) -> str:
        """A table's or column's name as the store keeps it (schema or database dropped)."""
        last = re.findall(r"`[^`]+`|\"[^\"]+\"|[\w$]+", text)[-1]
        return last[1:-1] if last[:1] in '`"' else self.unquoted(last)

    def unquoted(self, name: str) -> str:
        return name

    def follow(self, statement: str) -> None:
        if match := re.match(self.CREATE, statement, _FLAGS):
            what = spaced(match["what"]).upper()
            self.create(what, self.name(match["name"]), statement[match.end() :])
        elif match := re.match(self.ALTER, statement, _FLAGS):
            table = self.name(match["name"])
            if table in self.definitions:  # not the migrations' table: not checked
                for action in split_top_level(statement[match.end() :], self.brackets):
                    table = self.alter(table, action)
        else:
            self.other(statement)

    def create(self, what: str, name: str, rest: str) -> None:
        """CREATE ``what`` (upper case) ``name``, ``rest`` being the statement after the name."""
        raise NotImplementedError

    def alter(self, table: str, action: str) -> str:
        """Follow one action of an ALTER; return the table's name after it."""
        raise NotImplementedError

    def other(self, statement: str) -> None:
        """Any other statement."""

    def set_columns(self, table: str, columns: list[Column]) -> None:
        self.definitions[table] = replace(self.definitions[table], columns=tuple(columns))

    def set_key(self, table: str, key: str | None) -> None:
        self.definitions[table] = replace(self.definitions[table], key=key)

    def rename(self, old: str, new: str) -> None:
        if old in self.definitions:
            self.definitions[new] = self.definitions.pop(old)

    def drop(self, names: Iterable[str]) -> None:
        for name in names:
            self.definitions.pop(self.name(name), None)


def expected(model: Model, statements: Iterable[str]) -> dict[str, Definition]:
    """What ``statements`` leave, followed through ``model`` (a fresh one)."""
    for statement in statements:
        try:
            model.follow(statement)
        except ModelError as exc:
            raise ModelError(f"{exc}; in: {statement[:120]!r}") from None
    return model.definitions


def _column(item: str, stop: str, model: Model, brackets: str = "()") -> tuple[Column, str]:
    """A column definition: its name, its type up to the first ``stop`` keyword, and the rest."""
    match = re.match(rf"\s*({NAME})\s*", item, _FLAGS)
    if match is None:
        raise ModelError(f"not a column definition: {item[:60]!r}")
    rest = item[match.end() :]
    end = search(stop, rest, brackets)
    written = rest[: end.start()] if end else rest
    return Column(model.name(match[1]), spaced(written) or None), rest[len(written) :]


class ClickHouseModel(Model):
    """ClickHouse: a table's kind is its engine, its key the sorting key of a MergeTree."""

    COLUMN_END = (
        r"\b(DEFAULT|MATERIALIZED|ALIAS|EPHEMERAL|CODEC|TTL|COMMENT|NOT\s+NULL|NULL|"
        r"PRIMARY\s+KEY|AFTER|FIRST|SETTINGS)\b"
    )
    CLAUSE = r"\b(PARTITION\s+BY|PRIMARY\s+KEY|SAMPLE\s+BY|TTL|SETTINGS|COMMENT)\b"
    PASSED_OVER = (
        r"(CLEAR|COMMENT|MATERIALIZE)\s+(COLUMN|INDEX|TTL|PROJECTION|STATISTICS)|"
        r"(MODIFY|REMOVE|RESET)\s+(TTL|SETTING|COMMENT|QUERY)|"
        r"(ADD|DROP|CLEAR)\s+(INDEX|CONSTRAINT|PROJECTION|STATISTICS)|"
        r"DELETE\s+WHERE|UPDATE\s|DROP\s+(PARTITION|PART|DETACHED)|DETACH|ATTACH|FREEZE|"
        r"UNFREEZE|REPLACE\s+PARTITION|MOVE|FETCH"
    )

    CREATE = (
        rf"\s*(CREATE|ATTACH)\s+(OR\s+REPLACE\s+)?(TEMPORARY\s+)?(?P<what>TABLE|"
        rf"MATERIALIZED\s+VIEW|VIEW|DATABASE|\w+\s+VIEW|DICTIONARY)\s+"
        rf"(IF\s+NOT\s+EXISTS\s+)?(?P<name>{NAME})(\s+ON\s+CLUSTER\s+\S+)?"
    )
    ALTER = rf"\s*ALTER\s+TABLE\s+(IF\s+EXISTS\s+)?(?P<name>{NAME})(\s+ON\s+CLUSTER\s+\S+)?\s+"

    def other(self, statement: str) -> None:
        if match := re.match(
            rf"\s*DROP\s+(TEMPORARY\s+)?(TABLE|VIEW|DICTIONARY)\s+(IF\s+EXISTS\s+)?(?P<name>{NAME})",
            statement,
            _FLAGS,
        ):
            self.drop([match["name"]])
        elif match := re.match(r"\s*RENAME\s+TABLE\s+", statement, _FLAGS):
            for pair in split_top_level(statement[match.end() :]):
                names = re.fullmatch(rf"({NAME})\s+TO\s+({NAME})", pair, _FLAGS)
                if names is None:
                    raise ModelError(f"cannot follow RENAME TABLE {pair!r}")
                self.rename(self.name(names[1]), self.name(names[2]))
        elif re.match(r"\s*EXCHANGE\s", statement, _FLAGS):
            raise ModelError("cannot follow EXCHANGE")

    def create(self, what: str, name: str, rest: str) -> None:
        if what == "DATABASE":
            return
        if what == "TABLE":
            if not rest.lstrip().startswith("("):
                raise ModelError(f"cannot follow CREATE TABLE {name} without its column list")
            listed, tail = inside(rest)
            engine = search(r"\bENGINE\s*=\s*(\w+)", tail)
            if engine is None:
                raise ModelError(f"CREATE TABLE {name} names no engine")
            kind = engine[1]
            order = search(r"\bORDER\s+BY\s+", tail)
            key = None
            if kind.endswith("MergeTree"):
                if order is None:
                    raise ModelError(f"cannot follow {kind} {name} without ORDER BY")
                key = self._key(tail[order.end() :])
            self.definitions[name] = Definition(kind, self._columns(listed), key)
        elif what == "MATERIALIZED VIEW" or what == "VIEW":
            body = search(r"\bAS\s+(SELECT|WITH)\b", rest)
            head = rest[: body.start()] if body else rest
            storage = search(r"\b(ENGINE|POPULATE)\b", head)
            bracket = search(r"\(", head[: storage.start()] if storage else head)
            columns = self._columns(inside(head[bracket.start() :])[0]) if bracket else None
            kind = "MaterializedView" if what == "MATERIALIZED VIEW" else "View"
            self.definitions[name] = Definition(kind, columns, None)
        else:
            raise ModelError(f"cannot follow CREATE {what}")

    def _key(self, text: str) -> str:
        end = search(self.CLAUSE, text)
        return clickhouse_key(text[: end.start()] if end else text)

    def _columns(self, listed: str) -> tuple[Column, ...]:
        return tuple(
            _column(item, self.COLUMN_END, self)[0]
            for item in split_top_level(listed)
            if not re.match(r"(INDEX|CONSTRAINT|PROJECTION|PRIMARY\s+KEY)\b", item, _FLAGS)
        )

    def alter(self, table: str, action: str) -> str:
        columns = list(self.definitions[table].columns or ())
        names = [c.name for c in columns]
        if match := re.match(r"(ADD|MODIFY)\s+COLUMN\s+(IF\s+(NOT\s+)?EXISTS\s+)?", action, _FLAGS):
            column, rest = _column(action[match.end() :], self.COLUMN_END, self)
            if column.name not in names:
                if match[1].upper() == "MODIFY":
                    raise ModelError(f"MODIFY COLUMN {column.name}: {table} has no such column")
                columns.append(column)
            elif match[1].upper() == "MODIFY":
                position = names.index(column.name)
                written = column.type or columns[position].type
                columns[position] = Column(column.name, written)
            self._place(columns, column.name, rest)
            self.set_columns(table, columns)
        elif match := re.match(rf"DROP\s+COLUMN\s+(IF\s+EXISTS\s+)?({NAME})\s*$", action, _FLAGS):
            dropped = self.name(match[2])
            self.set_columns(table, [c for c in columns if c.name != dropped])
        elif match := re.match(
            rf"RENAME\s+COLUMN\s+(IF\s+EXISTS\s+)?({NAME})\s+TO\s+({NAME})\s*$", action, _FLAGS
        ):
            old, new = self.name(match[2]), self.name(match[3])
            self.set_columns(table, [Column(new, c.type) if c.name == old else c for c in columns])
        elif match := re.match(r"MODIFY\s+ORDER\s+BY\s+", action, _FLAGS):
            self.set_key(table, self._key(action[match.end() :]))
        elif not re.match(self.PASSED_OVER, action, _FLAGS):
            raise ModelError(f"cannot follow ALTER TABLE {table} {action[:60]}")
        return table

    def _place(self, columns: list[Column], name: str, rest: str) -> None:
        """Move column ``name`` where ``rest`` says (AFTER x, FIRST), if it says."""
        after = search(rf"\bAFTER\s+({NAME})\s*$", rest)
        first = search(r"\bFIRST\s*$", rest)
        if not after and not first:
            return
        column = next(c for c in columns if c.name == name)
        columns.remove(column)
        position = 0
        if after:
            anchor = self.name(rest[after.start(1) : after.end(1)])
            position = [c.name for c in columns].index(anchor) + 1
        columns.insert(position, column)


class PostgresModel(Model):
    """PostgreSQL: types as ``format_type`` prints them, the key the primary key's columns."""

    COLUMN_END = (
        r"\b(CONSTRAINT|PRIMARY\s+KEY|NOT\s+NULL|NULL|DEFAULT|REFERENCES|UNIQUE|CHECK|COLLATE|"
        r"GENERATED)\b"
    )
    TABLE_CONSTRAINT = r"(CONSTRAINT\s+\S+\s+)?(PRIMARY\s+KEY|UNIQUE|CHECK|FOREIGN\s+KEY|EXCLUDE)\b"
    ALIASES: ClassVar[dict[str, str]] = {
        "int": "integer",
        "int4": "integer",
        "serial": "integer",
        "serial4": "integer",
        "int8": "bigint",
        "bigserial": "bigint",
        "serial8": "bigint",
        "int2": "smallint",
        "smallserial": "smallint",
        "serial2": "smallint",
        "bool": "boolean",
        "float8": "double precision",
        "float": "double precision",
        "float4": "real",
        "varchar": "character varying",
        "char": "character(1)",
        "character": "character(1)",
        "decimal": "numeric",
        "timestamptz": "timestamp with time zone",
        "timestamp": "timestamp without time zone",
        "timetz": "time with time zone",
        "time": "time without time zone",
    }
    PASSED_OVER = (
        r"ALTER\s+(COLUMN\s+)?\S+\s+(SET|DROP|ADD|RESET|RESTART)\b|RENAME\s+CONSTRAINT|OWNER\s+TO|"
        r"SET\s+(LOGGED|UNLOGGED|TABLESPACE|ACCESS\s+METHOD|WITH|WITHOUT|\()|RESET\s*\(|"
        r"ENABLE|DISABLE|CLUSTER|REPLICA\s+IDENTITY|VALIDATE\s+CONSTRAINT|"
        r"ALTER\s+CONSTRAINT|FORCE|NO\s+FORCE|INHERIT|NO\s+INHERIT|ATTACH|DETACH"
    )

    def unquoted(self, name: str) -> str:
        return name.lower()

    @classmethod
    def type_name(cls, written: str | None) -> str | None:
        """A type as format_type prints it: varchar(36) is character varying(36)."""
        if written is None:
            return None
        text = spaced(written).lower().replace(", ", ",")
        match = re.fullmatch(r"([a-z0-9_ ]+?)\s*(\(.*\))?\s*((?:\[\d*\])*)", text)
        if match is None:
            return text
        base, size, array = match[1], match[2] or "", match[3]
        if base in ("timestamp", "time") and size:
            return f"{base}{size} without time zone{array}"
        if base in ("timestamptz", "timetz") and size:
            return f"{base[:-2]}{size} with time zone{array}"
        if base in ("char", "character") and size:
            return f"character{size}{array}"
        return f"{cls.ALIASES.get(base, base)}{size}{array}"

    CREATE = (
        rf"\s*CREATE\s+((GLOBAL|LOCAL|TEMP|TEMPORARY|UNLOGGED|OR\s+REPLACE)\s+)*"
        rf"(?P<what>TABLE|MATERIALIZED\s+VIEW|VIEW)\s+(IF\s+NOT\s+EXISTS\s+)?(?P<name>{NAME})"
    )
    ALTER = rf"\s*ALTER\s+TABLE\s+(IF\s+EXISTS\s+)?(ONLY\s+)?(?P<name>{NAME})\s*\*?\s+"

    def other(self, statement: str) -> None:
        if match := re.match(
            r"\s*DROP\s+(TABLE|VIEW|MATERIALIZED\s+VIEW)\s+(IF\s+EXISTS\s+)?", statement, _FLAGS
        ):
            names = re.sub(r"\s+(CASCADE|RESTRICT)\s*$", "", statement[match.end() :], flags=_FLAGS)
            self.drop(split_top_level(names))

    def create(self, what: str, name: str, rest: str) -> None:
        if what != "TABLE":
            self.definitions[name] = Definition(what.lower(), None, None)
            return
        if not rest.lstrip().startswith("("):
            raise ModelError(f"cannot follow CREATE TABLE {name} without its column list")
        columns: list[Column] = []
        key = ""
        for item in split_top_level(inside(rest)[0]):
            if re.match(r"LIKE\b", item, _FLAGS):
                raise ModelError(f"cannot follow CREATE TABLE {name} (LIKE ...)")
            if re.match(self.TABLE_CONSTRAINT, item, _FLAGS):
                key = self._primary_key(item) or key
                continue
            column, constraints = _column(item, self.COLUMN_END, self)
            columns.append(Column(column.name, self.type_name(column.type)))
            if search(r"\bPRIMARY\s+KEY\b", constraints):
                key = column.name
        self.definitions[name] = Definition("table", tuple(columns), key)

    def _primary_key(self, constraint: str) -> str | None:
        match = search(r"\bPRIMARY\s+KEY\s*\(", constraint)
        if match is None:
            return None
        listed = inside(constraint[match.end() - 1 :])[0]
        return ", ".join(self.name(column) for column in split_top_level(listed))

    def alter(self, table: str, action: str) -> str:
        definition = self.definitions[table]
        columns = list(definition.columns or ())
        if match := re.match(r"ADD\s+" + self.TABLE_CONSTRAINT, action, _FLAGS):
            key = self._primary_key(action)
            if key is not None:
                self.set_key(table, key)
        elif match := re.match(r"ADD\s+(COLUMN\s+)?(IF\s+NOT\s+EXISTS\s+)?", action, _FLAGS):
            column, constraints = _column(action[match.end() :], self.COLUMN_END, self)
            columns.append(Column(column.name, self.type_name(column.type)))
            self.set_columns(table, columns)
            if search(r"\bPRIMARY\s+KEY\b", constraints):
                self.set_key(table, column.name)
        elif match := re.match(rf"DROP\s+CONSTRAINT\s+(IF\s+EXISTS\s+)?({NAME})", action, _FLAGS):
            if self.name(match[2]) == f"{table}_pkey":
                self.set_key(table, "")
        elif match := re.match(
            rf"DROP\s+(COLUMN\s+)?(IF\s+EXISTS\s+)?({NAME})(\s+(CASCADE|RESTRICT))?\s*$",
            action,
            _FLAGS,
        ):
            dropped = self.name(match[3])
            self.set_columns(table, [c for c in columns if c.name != dropped])
            if dropped in (definition.key or "").split(", "):
                self.set_key(table, "")  # PostgreSQL drops a key with any of its columns
        elif match := re.match(
            rf"ALTER\s+(COLUMN\s+)?({NAME})\s+(SET\s+DATA\s+)?TYPE\s+", action, _FLAGS
        ):
            name = self.name(match[2])
            end = search(r"\b(COLLATE|USING)\b", action[match.end() :])
            written = action[match.end() :][: end.start() if end else None]
            self.set_columns(
                table,
                [Column(name, self.type_name(written)) if c.name == name else c for c in columns],
            )
        elif match := re.match(rf"RENAME\s+TO\s+({NAME})\s*$", action, _FLAGS):
            self.rename(table, self.name(match[1]))
            return self.name(match[1])
        elif match := re.match(
            rf"RENAME\s+(COLUMN\s+)?({NAME})\s+TO\s+({NAME})\s*$", action, _FLAGS
        ):
            old, new = self.name(match[2]), self.name(match[3])
            key = ", ".join(new if k == old else k for k in (definition.key or "").split(", ") if k)
            self.set_columns(table, [Column(new, c.type) if c.name == old else c for c in columns])
            self.set_key(table, key)
        elif not re.match(self.PASSED_OVER, action, _FLAGS):
            raise ModelError(f"cannot follow ALTER TABLE {table} {action[:60]}")
        return table


class KsqlDbModel(Model):
    """ksqlDB: a source's kind is STREAM or TABLE, its key the key columns (listed first, as
    DESCRIBE lists them); types are DESCRIBE's top-level ones (STRING for VARCHAR)."""

    brackets = "()<>"
    COLUMN_END = r"\b(PRIMARY\s+KEY|KEY|HEADERS|HEADER)\b"
    ALIASES: ClassVar[dict[str, str]] = {"VARCHAR": "STRING", "INT": "INTEGER"}
    SAME_TYPE = re.compile(rf"(LATEST_BY_OFFSET|EARLIEST_BY_OFFSET)\s*\(\s*({NAME})\s*\)", _FLAGS)

    def unquoted(self, name: str) -> str:
        return name.upper()

    @classmethod
    def type_name(cls, written: str | None) -> str | None:
        if written is None:
            return None
        top = re.split(r"[(<\s]", written.strip(), maxsplit=1)[0].upper()
        return cls.ALIASES.get(top, top)

    CREATE = (
        rf"\s*CREATE\s+(OR\s+REPLACE\s+)?(SOURCE\s+)?(?P<what>STREAM|TABLE)\s+"
        rf"(IF\s+NOT\s+EXISTS\s+)?(?P<name>{NAME})"
    )
    ALTER = rf"\s*ALTER\s+(STREAM|TABLE)\s+(?P<name>{NAME})\s+"

    def create(self, what: str, name: str, rest: str) -> None:
        if rest.lstrip().startswith("("):
            self._declared(what, name, inside(rest, self.brackets)[0])
            return
        query = search(r"\bAS\s+SELECT\b", rest, self.brackets)
        if query is None:
            raise ModelError(f"cannot follow CREATE {what} {name}: no columns, no query")
        self._selected(what, name, rest[query.end() :])

    def alter(self, table: str, action: str) -> str:
        added = re.match(r"ADD\s+(COLUMN\s+)?", action, _FLAGS)
        if added is None:
            raise ModelError(f"cannot follow ALTER {table} {action[:60]}")
        column, _ = _column(action[added.end() :], self.COLUMN_END, self, self.brackets)
        columns = [
            *(self.definitions[table].columns or ()),
            Column(column.name, self.type_name(column.type)),
        ]
        self.set_columns(table, columns)
        return table

    def other(self, statement: str) -> None:
        if match := re.match(
            rf"\s*DROP\s+(STREAM|TABLE)\s+(IF\s+EXISTS\s+)?({NAME})", statement, _FLAGS
        ):
            self.drop([match[3]])

    def _declared(self, kind: str, name: str, listed: str) -> None:
        columns, keys = [], []
        for item in split_top_level(listed, self.brackets):
            column, rest = _column(item, self.COLUMN_END, self, self.brackets)
            columns.append(Column(column.name, self.type_name(column.type)))
            if search(r"\b(PRIMARY\s+KEY|KEY)\b", rest, self.brackets):
                keys.append(column.name)
        self._define(kind, name, columns, keys)

    def _define(self, kind: str, name: str, columns: list[Column], keys: list[str] | None) -> None:
        if keys is None:
            self.definitions[name] = Definition(kind, tuple(columns), None)
            return
        ordered = [c for c in columns if c.name in keys] + [
            c for c in columns if c.name not in keys
        ]
        self.definitions[name] = Definition(kind, tuple(ordered), ", ".join(keys))

    def _selected(self, kind: str, name: str, query: str) -> None:
        """CREATE ... AS SELECT: the projection's columns, typed where the model can tell."""
        clauses = mask(query)
        source_at = re.search(rf"\bFROM\s+({NAME})", clauses, _FLAGS)
        if source_at is None or re.search(r"\bJOIN\b", clauses, _FLAGS):
            self.definitions[name] = Definition(kind, None, None)
            return
        source = self.definitions.get(self.name(query[source_at.start(1) : source_at.end(1)]))
        columns: list[Column] = []
        for item in split_top_level(query[: source_at.start()]):
            if re.fullmatch(rf"({NAME}\s*\.\s*)?\*", item):
                columns += list(source.columns or ()) if source else []
                continue
            alias = search(rf"\bAS\s+({NAME})\s*$", item)
            expression = item[: alias.start()].strip() if alias else item
            if alias is None and not re.fullmatch(NAME, expression):
                self.definitions[name] = Definition(kind, None, None)  # a generated name
                return
            column = self.name(item[alias.start(1) : alias.end(1)] if alias else expression)
            columns.append(Column(column, self._type_of(expression, source)))
        self._define(kind, name, columns, self._keys(kind, clauses, query, source, columns))

    def _type_of(self, expression: str, source: Definition | None) -> str | None:
        if re.match(r"COUNT\s*\(", expression, _FLAGS):
            return "BIGINT"
        same = self.SAME_TYPE.fullmatch(expression.strip())
        referenced = same[2] if same else expression if re.fullmatch(NAME, expression) else None
        column = source.column(self.name(referenced)) if source and referenced else None
        return column.type if column else None

    def _keys(
        self,
        kind: str,
        clauses: str,
        query: str,
        source: Definition | None,
        columns: list[Column],
    ) -> list[str] | None:
        grouped = re.search(
            r"\b(GROUP|PARTITION)\s+BY\s+(.*?)(\bHAVING\b|\bEMIT\b|\bLIMIT\b|$)", clauses, _FLAGS
        )
        if grouped:
            keys = split_top_level(query[grouped.start(2) : grouped.end(2)])
            if not all(re.fullmatch(NAME, key) for key in keys):
                return None
            return [self.name(key) for key in keys]
        if kind == "STREAM" and source and source.key is not None:
            names = {c.name for c in columns}
            return [key for key in source.key.split(", ") if key and key in names]
        return None
