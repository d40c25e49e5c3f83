"""A SELECT the subscriber's pages run on every view, prepared once per engine.

SQLAlchemy Core spends more on executing a small SELECT (a Connection, the statement's cache key, an execution
context, a result object and its row) than the database spends answering it. A PreparedRead keeps what SQLAlchemy
would produce for the statement on this engine's dialect (its SQL text, how each parameter is sent and how each
column is read, from the column types themselves) and runs it on a connection from the same pool: the same SQL,
the same values, the same errors (the driver's wrapped as SQLAlchemy wraps them), with a few lines of work."""

from collections import namedtuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine


class PreparedRead:
    def __init__(self, engine: Engine, statement: sa.Select, row_name: str):
        dialect = self.dialect = engine.dialect
        compiled = self.compiled = statement.compile(dialect=dialect)
        if compiled.post_compile_params:  # an expanding `IN`: its SQL is only final at execution
            raise ValueError("a prepared read takes no expanding parameters (an IN list of sa.literal() values does)")
        self.engine, self.sql = engine, str(compiled)
        self.order = tuple(compiled.positiontup) if compiled.positional else None
        self.sent = {name: process for name, bind in compiled.binds.items()
                     if (process := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None}
        self.columns = list(statement.selected_columns)
        self.read = None  # how each column is read: from the driver's own type codes, at the first execution
        # read like SQLAlchemy's Row: by attribute, by position, and as a tuple
        self.row = namedtuple(row_name, [column.key for column in self.columns])

    def parameters(self, values: dict):
        params = self.compiled.construct_params(values)
        for name, process in self.sent.items():
            if name in params:
                params[name] = process(params[name])
        return tuple(params[name] for name in self.order) if self.order is not None else params

    def first(self, **values):
        """The first row, or None."""
        params = self.parameters(values)
        connection = self.engine.raw_connection()
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
            self._failed(connection, error, params)
        finally:
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

    def _failed(self, connection, error: Exception, params):
        """The driver's error raised as SQLAlchemy raises it from an execution (OperationalError for a lock or a
        lost connection, and so on); a connection the database dropped is not handed out again."""
        lost = self.dialect.is_disconnect(error, connection.dbapi_connection, None)
        if lost:
            connection.invalidate(error)
        raise sa.exc.DBAPIError.instance(self.sql, params, error, self.dialect.loaded_dbapi.Error,
                                         connection_invalidated=lost, dialect=self.dialect) from error
