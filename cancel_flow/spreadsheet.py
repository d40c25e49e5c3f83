"""The coach's CSV downloads: cells that spreadsheets open as text, never as formulas; times in the coach's time
zone; the file written in chunks, for a streamed answer."""

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

from cancel_flow.clock import as_utc

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value) -> str:
    """Spreadsheets run cells that start with = + - @ as formulas; a leading quote keeps them text."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def local_times(zone_name: str) -> Callable[[datetime | None], str]:
    """A moment as the coach's local time to the second, with its offset ("" for none)."""
    zone = ZoneInfo(zone_name)

    def when(moment: datetime | None) -> str:
        return as_utc(moment).astimezone(zone).replace(microsecond=0).isoformat() if moment else ""

    return when


def csv_chunks(header: list[str], rows: Iterable[list], every: int = 200) -> Iterator[str]:
    """UTF-8 with a byte-order mark (so Excel reads the accents right): the header, then the rows, `every` rows
    to a chunk."""
    buffer = io.StringIO()
    buffer.write("\ufeff")
    writer = csv.writer(buffer)
    writer.writerow(header)
    for index, cells in enumerate(rows):
        writer.writerow(cells)
        if index % every == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
