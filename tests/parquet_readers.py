"""Read a Perimeter data directory's Parquet files with pyarrow and with DuckDB, as an analyst
would, and print what each reader saw as one JSON object on stdout.

    python3 tests/parquet_readers.py DATA_DIR

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


def raw_is_object(text):
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def pyarrow_rows(root, columns, row):
    """Every row of the hive-partitioned dataset at `root` (pyarrow skips `.`-prefixed files)."""
    if not os.path.isdir(root):
        return []
    table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
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


def main():
    data = sys.argv[1]
    events = os.path.join(data, "parquet", "events")
    alerts = os.path.join(data, "parquet", "alerts")
    con = duckdb.connect()

    def event(r):
        return [r[0], r[1], str(r[2]), r[3], r[4], r[5], r[6], r[7], r[8], r[9]]

    event_columns = [
        "tenant", "source", "dt", "event_id", "timestamp", "line", "source_as_number",
        "event_category", "user_name", "raw",
    ]
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
