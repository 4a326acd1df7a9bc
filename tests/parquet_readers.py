"""Read a Perimeter data directory's Parquet files with pyarrow and with DuckDB, as an analyst
would, and print what each reader saw as one JSON object on stdout.

    python3 tests/parquet_readers.py DATA_DIR
    python3 tests/parquet_readers.py --export FILE   # a file of GET /api/v1/events/export?format=parquet

An export holds `tenant` and `source` as columns, and no `dt`: its rows get the day of their
`timestamp` there, so they compare with the store's rows as they are.

Needs `pip install pyarrow duckdb`. The integration test `parquet_readers` compares both readers'
rows with what Perimeter stored; by hand it shows the files open outside Perimeter.

Each event row: [tenant, source, dt, event_id, timestamp (us since the epoch), line,
source_as_number, event_category, user_name, raw is a JSON object]. Each alert row: [tenant, dt,
alert_id, rule_id, severity, timestamp (us), event_ids]. Rows are sorted, so the two readers'
lists compare as they are.
"""

import json
import os
import sys

import duckdb
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from datetime import datetime, timezone


def raw_is_object(text):
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def pyarrow_rows(root, columns, row):
    """Every row of the hive-partitioned dataset at `root` (pyarrow skips `.`-prefixed files)."""
    if not os.path.isdir(root):
        return []
    return table_rows(ds.dataset(root, format="parquet", partitioning="hive").to_table(), columns, row)


def table_rows(table, columns, row):
    # Timestamps as microseconds since the epoch, whatever the reader's time zone.
    table = table.set_column(
        table.schema.get_field_index("timestamp"),
        "timestamp",
        pc.cast(table.column("timestamp"), "int64"),
    )
    return sorted(row(r) for r in table.select(columns).to_pylist())


def duckdb_rows(con, root, select, row):
    """Every row of `root/**/*.parquet` with hive partitioning, as DuckDB reads a glob."""
    if not os.path.isdir(root):
        return []
    glob = os.path.join(root, "**", "*.parquet").replace("'", "''")
    query = f"select {select} from read_parquet('{glob}', hive_partitioning = true)"
    return sorted(row(r) for r in con.sql(query).fetchall())


EVENT_COLUMNS = [
    "tenant", "source", "dt", "event_id", "timestamp", "line", "source_as_number",
    "event_category", "user_name", "raw",
]


def event(r):
    return [r[0], r[1], str(r[2]), r[3], r[4], r[5], r[6], r[7], r[8], r[9]]


def export(path):
    """The rows of one exported file, `dt` the UTC day of each `timestamp`."""
    def day(us):
        return datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc).strftime("%Y-%m-%d")

    columns = [c for c in EVENT_COLUMNS if c != "dt"]
    pyarrow = table_rows(
        pq.read_table(path),
        columns,
        lambda r: event(
            [r["tenant"], r["source"], day(r["timestamp"])]
            + [r[c] for c in columns[2:-1]]
            + [raw_is_object(r["raw"])]
        ),
    )
    query = (
        "select tenant, source, strftime(timestamp at time zone 'UTC', '%Y-%m-%d'), event_id, "
        "epoch_us(timestamp), line, source_as_number, event_category, user_name, "
        "json_type(raw) = 'OBJECT' from read_parquet('" + path.replace("'", "''") + "')"
    )
    rows = sorted(event(r) for r in duckdb.connect().sql(query).fetchall())
    return {"events": {"pyarrow": pyarrow, "duckdb": rows}, "alerts": {"pyarrow": [], "duckdb": []}}


def main():
    if sys.argv[1] == "--export":
        out = export(sys.argv[2])
        out["pyarrow_version"] = __import__("pyarrow").__version__
        out["duckdb_version"] = duckdb.__version__
        json.dump(out, sys.stdout)
        return
    data = sys.argv[1]
    events = os.path.join(data, "parquet", "events")
    alerts = os.path.join(data, "parquet", "alerts")
    con = duckdb.connect()

    event_columns = EVENT_COLUMNS
    out = {
        "pyarrow_version": __import__("pyarrow").__version__,
        "duckdb_version": duckdb.__version__,
        "events": {
            "pyarrow": pyarrow_rows(
                events,
                event_columns,
                lambda r: event([r[c] for c in event_columns[:-1]] + [raw_is_object(r["raw"])]),
            ),
            "duckdb": duckdb_rows(
                con,
                events,
                "tenant, source, cast(dt as varchar), event_id, epoch_us(timestamp), line, "
                "source_as_number, event_category, user_name, json_type(raw) = 'OBJECT'",
                event,
            ),
        },
    }

    alert_columns = ["tenant", "dt", "alert_id", "rule_id", "severity", "timestamp", "event_ids"]

    def alert(r):
        return [r[0], str(r[1]), r[2], r[3], r[4], r[5], r[6]]

    out["alerts"] = {
        "pyarrow": pyarrow_rows(alerts, alert_columns, lambda r: alert([r[c] for c in alert_columns])),
        "duckdb": duckdb_rows(
            con,
            alerts,
            "tenant, cast(dt as varchar), alert_id, rule_id, severity, epoch_us(timestamp), event_ids",
            alert,
        ),
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
