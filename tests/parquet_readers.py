"""Read a Perimeter data directory's Parquet files with pyarrow, DuckDB and Spark, as an analyst
would, and print what each reader saw as one JSON object on stdout.

    python3 tests/parquet_readers.py DATA_DIR
    python3 tests/parquet_readers.py --export FILE   # a file of GET /api/v1/events/export?format=parquet

An export holds `tenant` and `source` as columns, and no `dt`: its rows get the day of their
`timestamp` there, so they compare with the store's rows as they are.

Needs `pip install pyarrow duckdb pyspark` and a Java runtime for Spark (17 or later). Spark runs
in local mode on loopback with its defaults otherwise, partition type inference included. The
integration test `parquet_readers` compares the readers' rows with what Perimeter stored; by hand
it shows the files open outside Perimeter.

Each event row: [tenant, source, dt, event_id, timestamp (us since the epoch), line,
source_as_number, event_category, user_name, raw is a JSON object]. Each alert row: [tenant, dt,
alert_id, rule_id, severity, timestamp (us), event_ids]. Rows are sorted, so the readers' lists
compare as they are.
"""

# Spark's driver binds to loopback only (before pyspark starts its JVM).
import os

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

import atexit
import glob
import json
import shutil
import sys
import tempfile

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


def has_parquet(root):
    """Whether `root` holds a file Spark reads (it skips `.`- and `_`-prefixed names, as
    pyarrow does, and fails on a tree with none where the others read no rows)."""
    return any(
        not any(part.startswith((".", "_")) for part in os.path.relpath(f, root).split(os.sep))
        for f in glob.glob(os.path.join(root, "**", "*.parquet"), recursive=True)
    )


SPARK = None


def spark():
    """One local Spark session for the whole run (starting its JVM takes seconds)."""
    global SPARK
    if SPARK is None:
        from pyspark.sql import SparkSession

        warehouse = tempfile.mkdtemp(prefix="perimeter-spark-")
        atexit.register(shutil.rmtree, warehouse, ignore_errors=True)
        SPARK = (
            SparkSession.builder.master("local[1]")
            .appName("perimeter-parquet-readers")
            .config("spark.ui.enabled", "false")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.sql.warehouse.dir", warehouse)
            # Times compare as microseconds since the epoch; the day of an export's rows is UTC.
            .config("spark.sql.session.timeZone", "UTC")
            .getOrCreate()
        )
        SPARK.sparkContext.setLogLevel("ERROR")
        atexit.register(SPARK.stop)
    return SPARK


def spark_rows(path, select, row):
    """Every row of a hive-partitioned tree (or one file) as `spark.read.parquet` reads it."""
    if not os.path.isfile(path) and not has_parquet(path):
        return []
    frame = spark().read.parquet(path)
    return sorted(row(list(r)) for r in frame.selectExpr(*select).collect())


def duckdb_rows(con, root, select, row):
    """Every row of `root/**/*.parquet` with hive partitioning, as DuckDB reads a glob."""
    if not os.path.isdir(root):
        return []
    pattern = os.path.join(root, "**", "*.parquet").replace("'", "''")
    query = f"select {select} from read_parquet('{pattern}', hive_partitioning = true)"
    return sorted(row(r) for r in con.sql(query).fetchall())


EVENT_COLUMNS = [
    "tenant", "source", "dt", "event_id", "timestamp", "line", "source_as_number",
    "event_category", "user_name", "raw",
]


def event(r):
    return [r[0], r[1], str(r[2]), r[3], r[4], r[5], r[6], r[7], r[8], r[9]]


# The event row's columns as Spark SQL expressions; `raw` is checked in Python (`spark_event`).
SPARK_EVENT_SELECT = [
    "tenant", "source", "cast(dt as string)", "event_id", "unix_micros(timestamp)", "line",
    "source_as_number", "event_category", "user_name", "raw",
]


def spark_event(r):
    return event(r[:-1] + [raw_is_object(r[-1])])


def versions():
    import pyspark

    return {
        "pyarrow_version": __import__("pyarrow").__version__,
        "duckdb_version": duckdb.__version__,
        "spark_version": pyspark.__version__,
    }


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
    spark = spark_rows(
        path,
        ["tenant", "source", "date_format(timestamp, 'yyyy-MM-dd')"] + SPARK_EVENT_SELECT[3:],
        spark_event,
    )
    none = {"pyarrow": [], "duckdb": [], "spark": []}
    return {"events": {"pyarrow": pyarrow, "duckdb": rows, "spark": spark}, "alerts": none}


def main():
    if sys.argv[1] == "--export":
        out = export(sys.argv[2])
        out.update(versions())
        json.dump(out, sys.stdout)
        return
    data = sys.argv[1]
    events = os.path.join(data, "parquet", "events")
    alerts = os.path.join(data, "parquet", "alerts")
    con = duckdb.connect()

    event_columns = EVENT_COLUMNS
    out = versions()
    out.update({
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
            "spark": spark_rows(events, SPARK_EVENT_SELECT, spark_event),
        },
    })

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
        "spark": spark_rows(
            alerts,
            [
                "tenant", "cast(dt as string)", "alert_id", "rule_id", "severity",
                "unix_micros(timestamp)", "event_ids",
            ],
            alert,
        ),
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
