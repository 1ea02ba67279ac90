# PostgreSQL: one psql session holds a non-exclusive base backup across the
# snapshot (pg_backup_start ... pg_backup_stop), and writes the marker row
# just before the freeze.
# Args: PORT TOKEN LABEL BINDIR
PORT=$1 TOKEN=$2 LABEL=$3 BINDIR=$4
sql_mark() { printf '\\echo @@surety-%s@@' "$1"; }
trap 'kill "${SQL_PID:-0}" 2>/dev/null' EXIT
sql_open runuser -u postgres -- "$BINDIR/psql" -X -q -A -t -F $'\t' -p "$PORT" -d postgres -v ON_ERROR_STOP=0
sql 30 "SET application_name = 'surety'; SET synchronous_commit = local;" ||
    fail "cannot open a session: ${OUT//$'\n'/ }"
sql 30 "SELECT pg_is_in_recovery(), current_setting('server_version_num'),
       current_setting('archive_mode'), current_setting('archive_command'),
       current_setting('data_directory');" || fail "${OUT//$'\n'/ }"
event info "${OUT%$'\n'}"
recovery=${OUT%%$'\t'*}

if [[ $recovery == f ]]; then
    sql 60 "CREATE SCHEMA IF NOT EXISTS surety;
        CREATE TABLE IF NOT EXISTS surety.markers (token text PRIMARY KEY, at timestamptz NOT NULL);" ||
        fail "marker table: ${OUT//$'\n'/ }"
    sql 300 "CHECKPOINT;" || fail "CHECKPOINT: ${OUT//$'\n'/ }"
fi
sql 300 "SELECT pg_backup_start('$LABEL', true);" || fail "pg_backup_start: ${OUT//$'\n'/ }"
event prepared "${OUT%$'\n'}"

stop_backup() {
    sql 60 "SELECT lsn, translate(encode(convert_to(labelfile, 'UTF8'), 'base64'), E'\n', '')
            FROM pg_backup_stop(false);" || fail "pg_backup_stop: ${OUT//$'\n'/ }"
    event stopped "${OUT%$'\n'}"
}

if ! wait_go freeze 300; then stop_backup; exit 1; fi
if [[ $recovery == f ]]; then
    sql "$LEFT" "INSERT INTO surety.markers VALUES ('$TOKEN', clock_timestamp()) RETURNING at;" ||
        fail "marker row: ${OUT//$'\n'/ }"
    event marker "${OUT%$'\n'}"
fi
event frozen
if ! wait_go thaw "$LEFT"; then stop_backup; exit 1; fi
event thawed
stop_backup
linger
