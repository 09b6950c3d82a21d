"""Data analysis: tables in DuckDB, profiled without a model, queried in a sandbox, answered with SQL you can see.

``loading`` reads files into tables, ``profile`` describes them, ``sandbox`` and ``warehouse`` run queries that
can read the owner's tables and nothing else, ``charts`` picks a chart, ``narrative`` checks the numbers a
narrative quotes, ``analyses`` computes without a model, ``ask`` lets a model write the SQL, and
``service.DataService`` is what the front ends call.
"""

from chatcore.services.data.answers import Answer
from chatcore.services.data.errors import DataError, LoadRefused, QueryFailed, QueryRefused, QueryTimeout
from chatcore.services.data.sandbox import Limits, Result
from chatcore.services.data.service import DataService
from chatcore.services.data.warehouse import Warehouse

__all__ = ["Answer", "DataError", "DataService", "Limits", "LoadRefused", "QueryFailed", "QueryRefused",
           "QueryTimeout", "Result", "Warehouse", "for_server"]


def for_server(manager: object, store: object) -> DataService:
    """The one ``DataService`` a server's page and API share: one process must open each owner's DuckDB
    file through one :class:`Warehouse`, whose lock keeps loads and queries apart."""
    return DataService.from_settings(manager.settings, store, backend_for=manager.wait_for,  # type: ignore[attr-defined]
                                     hold=manager.hold)  # type: ignore[attr-defined]
