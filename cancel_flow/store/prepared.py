"""The statements the subscriber's pages run on every view, prepared once per engine.

SQLAlchemy Core spends more on executing a small statement (a Connection, the statement's cache key, an execution
context, a result object and its row) than the database spends answering it. A prepared statement keeps what
SQLAlchemy would produce for it on this engine's dialect (its SQL text, how each parameter is sent and how each
column is read, from the column types themselves) and runs it on a connection from the same pool: the same SQL,
the same values, the same errors (the driver's wrapped as SQLAlchemy wraps them), with a few lines of work."""

from collections import namedtuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine


class _Prepared:
    def __init__(self, engine: Engine, statement, column_keys=None):
        dialect = self.dialect = engine.dialect
        compiled = self.compiled = statement.compile(dialect=dialect, column_keys=column_keys)
        if compiled.post_compile_params:  # an expanding `IN`: its SQL is only final at execution
            raise ValueError("a prepared statement takes no expanding parameters (an IN list of sa.literal() values does)")
        self.engine, self.sql = engine, str(compiled)
        self.order = tuple(compiled.positiontup) if compiled.positional else None
        self.sent = {name: process for name, bind in compiled.binds.items()
                     if (process := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None}

    def parameters(self, values: dict):
        params = self.compiled.construct_params(values)
        for name, process in self.sent.items():
            if name in params:
                params[name] = process(params[name])
        return tuple(params[name] for name in self.order) if self.order is not None else params

    def _failed(self, connection, error: Exception, params):
        """The driver's error raised as SQLAlchemy raises it from an execution (OperationalError for a lock or a
        lost connection, and so on); a connection the database dropped is not handed out again."""
        lost = self.dialect.is_disconnect(error, connection.dbapi_connection, None)
        if lost:
            connection.invalidate(error)
        raise sa.exc.DBAPIError.instance(self.sql, params, error, self.dialect.loaded_dbapi.Error,
                                         connection_invalidated=lost, dialect=self.dialect) from error


class _SpareConnections:
    """SQLite connections the prepared reads keep for themselves: taken from the engine's pool once and detached from
    it (with the pool's set-up: the engine's `connect` handlers ran), then handed from one read to the next without
    the pool's check-out and check-in, most of a read's cost. A read on SQLite opens no transaction (its driver
    begins one only before a write), so there is nothing for the pool's rollback to undo. A connection a read
    failed on is closed, never handed on; the engine's `dispose()` closes the rest. PostgreSQL's connections stay
    with the pool, which checks that a server connection is still alive."""

    KEEP = 8  # at most this many idle (one per read running at the same moment)

    def __init__(self, engine: Engine):
        self.engine, self.idle = engine, []
        sa.event.listen(engine, "engine_disposed", self.close_all)

    def take(self):
        try:
            return self.idle.pop()
        except IndexError:
            connection = self.engine.raw_connection()
            connection.detach()  # closed for real when closed; the pool makes another in its place when needed
            return connection

    def give_back(self, connection, failed: bool) -> None:
        if failed or len(self.idle) >= self.KEEP:
            connection.close()
        else:
            self.idle.append(connection)

    def close_all(self, _engine=None) -> None:
        idle, self.idle = self.idle, []
        for connection in idle:
            connection.close()


class PreparedRead(_Prepared):
    """A SELECT, read as rows that read like SQLAlchemy's (by attribute, by position, as a tuple)."""

    def __init__(self, engine: Engine, statement: sa.Select, row_name: str):
        super().__init__(engine, statement)
        self.columns = list(statement.selected_columns)
        self.read = None  # how each column is read: from the driver's own type codes, at the first execution
        self.row = namedtuple(row_name, [column.key for column in self.columns])
        self.spare = _SpareConnections(engine) if engine.dialect.name == "sqlite" else None

    def first(self, **values):
        """The first row, or None."""
        params = self.parameters(values)
        spare = self.spare
        connection = spare.take() if spare is not None else self.engine.raw_connection()
        failed = False
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(self.sql, params)
                found = cursor.fetchone()
                if self.read is None:
                    self.read = self._readers(cursor.description)
            finally:
                cursor.close()
        except self.dialect.loaded_dbapi.Error as error:
            failed = True
            self._failed(connection, error, params)
        finally:
            if spare is not None:
                spare.give_back(connection, failed)
            else:
                connection.close()  # back to the pool, which rolls back as for any connection
        if found is None:
            return None
        if self.read:
            found = list(found)
            for index, process in self.read:
                found[index] = process(found[index])
        return self.row._make(found)

    def _readers(self, description) -> tuple:
        """(position, conversion) of each column SQLAlchemy converts on this dialect, as its result set-up does."""
        dialect = self.dialect
        return tuple((index, process) for index, (column, described) in enumerate(zip(self.columns, description))
                     if (process := column.type.dialect_impl(dialect).result_processor(dialect, described[1])) is not None)


class PreparedInsert(_Prepared):
    """An INSERT … RETURNING of one row with the given columns, in a transaction of its own. The columns SQLAlchemy
    would add with their Python-side constant defaults (a column left out, with `default=`) are added the same way,
    and a column left out of the values takes its constant default as SQLAlchemy's INSERT of it would."""

    def __init__(self, engine: Engine, statement: sa.Insert, columns):
        super().__init__(engine, statement, column_keys=list(columns))
        prefetch = self.compiled.insert_prefetch
        if any(not column.default.is_scalar for column in prefetch):
            raise ValueError("a prepared insert takes Python-side defaults that are constants only")
        given = [column for column in statement.table.c if column.key in columns]
        if any(isinstance(column.type, sa.JSON) for column in given):  # None would be sent as JSON's null, not NULL
            raise ValueError("a prepared insert takes no JSON column")
        # a given column left out of the values: its constant default, else NULL, as SQLAlchemy's INSERT without it
        # (a column with a computed or a server-side default must be given)
        self.defaults = {column.key: None for column in given if column.default is None and column.server_default is None}
        self.defaults.update({column.key: column.default.arg for column in (*given, *prefetch)
                              if column.default is not None and column.default.is_scalar})
        if len(self.compiled.effective_returning or ()) != 1:
            raise ValueError("a prepared insert returns one column")
        self.returned = self.compiled.effective_returning[0]
        self.columns = frozenset(columns)
        self.read = None
        # On SQLite, connections of its own, as the prepared reads keep (`_SpareConnections`): a connection is handed
        # on only after its commit (nothing left open), and one the insert or its commit failed on is closed.
        self.spare = _SpareConnections(engine) if engine.dialect.name == "sqlite" else None

    def returning(self, values: dict):
        """The returned column of the inserted row (committed), or None when no row was inserted."""
        if not self.columns.issuperset(values):
            raise ValueError(f"not a column of this insert: {', '.join(sorted(set(values) - self.columns))}")
        params = self.parameters({**self.defaults, **values})
        spare = self.spare
        connection = spare.take() if spare is not None else self.engine.raw_connection()
        failed = True
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(self.sql, params)
                found = cursor.fetchone()
                if found is not None and self.read is None:
                    self.read = self.returned.type.dialect_impl(self.dialect).result_processor(
                        self.dialect, cursor.description[0][1]) or (lambda value: value)
            finally:
                cursor.close()
            connection.dbapi_connection.commit()
            failed = False
        except self.dialect.loaded_dbapi.Error as error:
            self._failed(connection, error, params)
        finally:
            if spare is not None:
                spare.give_back(connection, failed)  # closed (so rolled back) after any failure
            else:
                connection.close()  # back to the pool (rolled back after a failure, as for any connection)
        return None if found is None else self.read(found[0])
