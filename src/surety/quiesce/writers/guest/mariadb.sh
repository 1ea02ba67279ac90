# MariaDB: write the marker row, then one session holds FLUSH TABLES WITH READ
# LOCK across the snapshot and records the binlog position and GTID state.
# On a replica no marker is written: a local write there would be an errant
# transaction (a GTID the source never had) that breaks the next failover.
# Args: TOKEN
TOKEN=$1
sql_mark() { printf "SELECT '@@surety-%s@@';" "$1"; }
CLIENT=(mariadb --protocol=socket -u root -N -B --unbuffered --force)
trap 'kill "${SQL_PID:-0}" 2>/dev/null' EXIT
sql_open "${CLIENT[@]}"
sql 30 "SELECT CONNECTION_ID(), @@server_id, @@gtid_domain_id, @@log_bin, @@version, @@read_only;" ||
    fail "cannot open a session: ${OUT//$'\n'/ }"
event info "${OUT%$'\n'}"
CID=${OUT%%$'\t'*}
sql 30 "SHOW ALL SLAVES STATUS;" || fail "SHOW ALL SLAVES STATUS: ${OUT//$'\n'/ }"
REPLICA=0
[[ -n ${OUT//[[:space:]]/} ]] && REPLICA=1
event replica "$REPLICA"
if ((!REPLICA)); then
    sql 60 "CREATE DATABASE IF NOT EXISTS surety;
        CREATE TABLE IF NOT EXISTS surety.markers (token varchar(64) PRIMARY KEY, at datetime(6) NOT NULL) ENGINE=InnoDB;" ||
        fail "marker table: ${OUT//$'\n'/ }"
fi
event prepared

wait_go freeze 300 || exit 1
if ((!REPLICA)); then
    sql "$LEFT" "INSERT INTO surety.markers VALUES ('$TOKEN', NOW(6)); SELECT at FROM surety.markers WHERE token = '$TOKEN';" ||
        fail "marker row: ${OUT//$'\n'/ }"
    event marker "${OUT%$'\n'}"
fi
if ! sql "$LEFT" "FLUSH TABLES WITH READ LOCK;"; then
    "${CLIENT[@]}" -e "KILL QUERY $CID" >/dev/null 2>&1
    fail "FLUSH TABLES WITH READ LOCK did not finish within the freeze window (a long query holds a table?)"
fi
sql "$LEFT" "SHOW MASTER STATUS;" || fail "SHOW MASTER STATUS: ${OUT//$'\n'/ }"
event binlog "${OUT%$'\n'}"
sql "$LEFT" "SELECT @@gtid_binlog_pos, @@gtid_current_pos;" || fail "${OUT//$'\n'/ }"
event gtid "${OUT%$'\n'}"
event frozen
if wait_go thaw "$LEFT"; then
    sql 30 "UNLOCK TABLES;"
    event thawed
else
    sql 30 "UNLOCK TABLES;"
fi
linger
