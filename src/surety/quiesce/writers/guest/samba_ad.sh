# Samba AD DC: all the work happens at prepare, outside the freeze window.
# Read what restore needs locally from sam.ldb (root, no credentials), set this
# DC's marker contact to the job token, then `samba-tool domain backup offline`
# into a temporary directory that is renamed into KEEP: the guest never holds a
# half tarball, and only the newest tarball is kept. Multi-line values are sent
# base64-encoded; the host parses them.
# Args: TOKEN SMB_CONF KEEP
TOKEN=$1 CONF=$2 KEEP=$3
PART=$KEEP/.partial-$TOKEN
BK_PID=""
trap '[[ -n $BK_PID ]] && kill "$BK_PID" 2>/dev/null; rm -rf "$PART"' EXIT

one_line() { tr '\n' ' ' | tr -s ' ' | cut -c1-600; }
param() { testparm -s "$CONF" "$@" 2>/dev/null; }
unfold() { awk 'substr($0, 1, 1) == " " { l = l substr($0, 2); next } NR > 1 { print l } { l = $0 } END { print l }'; }
attr() { unfold | sed -n "s/^$1: //p" | head -1; }
# ldb ARGS...: ldbsearch on the local sam.ldb; its LDIF in $OUT
ldb() {
    OUT=$(ldbsearch -H "$SAM" --configfile="$CONF" "$@" 2>"$DIR/stderr") ||
        fail "ldbsearch -H $SAM $*: $(one_line <"$DIR/stderr") $(one_line <<<"$OUT")"
}

ROLE=$(param --parameter-name="server role")
[[ $ROLE == "active directory domain controller" ]] ||
    fail "$CONF says server role = ${ROLE:-?}, not an active directory domain controller"
REALM=$(param --parameter-name=realm)
NETBIOS=$(param --parameter-name="netbios name")
PRIV=$(param --parameter-name="private dir")
SAM=$PRIV/sam.ldb
event conf "$REALM	$(param --parameter-name=workgroup)	$NETBIOS	$PRIV	$(param --section-name=sysvol --parameter-name=path)	$CONF"

ldb -s base -b "" defaultNamingContext configurationNamingContext dsServiceName
BASE=$(attr defaultNamingContext <<<"$OUT")
CONFIG=$(attr configurationNamingContext <<<"$OUT")
NTDS=$(attr dsServiceName <<<"$OUT")
[[ -n $BASE && -n $CONFIG && -n $NTDS ]] || fail "the rootDSE of $SAM names no naming contexts: $(one_line <<<"$OUT")"

# the marker: one contact per DC (no RID needed; it replicates), info = token
MARKER="CN=surety-marker-$NETBIOS,CN=Users,$BASE"
AT=$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)
if ! OUT=$(printf 'dn: %s\nchangetype: modify\nreplace: info\ninfo: %s\n' "$MARKER" "$TOKEN" |
    ldbmodify -H "$SAM" --configfile="$CONF" 2>&1); then
    [[ $OUT == *"No such"* ]] || fail "marker $MARKER: $(one_line <<<"$OUT")"
    OUT=$(printf 'dn: %s\nobjectClass: contact\ninfo: %s\n' "$MARKER" "$TOKEN" |
        ldbadd -H "$SAM" --configfile="$CONF" 2>&1) || fail "marker $MARKER: $(one_line <<<"$OUT")"
fi
event marker "$MARKER	$AT"

# the DC's replication identity, after the marker and just before the backup
ldb -s base -b "" highestCommittedUSN dnsHostName defaultNamingContext
event rootdse "$(base64 -w0 <<<"$OUT")"
ldb -s base -b "$NTDS" invocationId
event ntds "$(base64 -w0 <<<"$OUT")"
OUT=$(samba-tool fsmo show -H "$SAM" -s "$CONF" 2>"$DIR/stderr") ||
    fail "samba-tool fsmo show: $(one_line <"$DIR/stderr") $(one_line <<<"$OUT")"
event fsmo "$(base64 -w0 <<<"$OUT")"
ldb -s base -b "CN=Directory Service,CN=Windows NT,CN=Services,$CONFIG" tombstoneLifetime
event tombstone "$(base64 -w0 <<<"$OUT")"
ldb -b "CN=Sites,$CONFIG" "(|(objectClass=server)(objectClass=nTDSDSA))" dNSHostName
event servers "$(base64 -w0 <<<"$OUT")"
for host in $(unfold <<<"$OUT" | sed -n 's/^dNSHostName: //p' | sort -u); do
    event address "$host	$(timeout 5 getent ahostsv4 "$host" | awk 'NR == 1 { print $1 }')"
done
event version "$(samba --version 2>&1 | head -1)"

# the application-consistent copy: samba-tool locks each database and copies it.
# It holds every password hash and the domain's keys: root only.
umask 077
mkdir -p "$KEEP" && chmod 700 "$KEEP" || fail "cannot create $KEEP"
rm -rf "$KEEP"/.partial-*
mkdir -p "$PART" || fail "cannot create $PART"
START=$(now_us)
samba-tool domain backup offline --targetdir="$PART" -s "$CONF" >"$DIR/backup.log" 2>&1 &
BK_PID=$!
while kill -0 "$BK_PID" 2>/dev/null; do
    [[ -e $DIR/abort ]] && { event aborted prepare; exit 1; }
    sleep 0.1
done
wait "$BK_PID"
RC=$?
BK_PID=""
if ((RC != 0)); then
    WHY=$(grep -E '^ERROR' "$DIR/backup.log" | tail -1)
    [[ -n $WHY ]] || WHY=$(grep -v '^  *adding' "$DIR/backup.log" | tail -3 | one_line)
    fail "samba-tool domain backup offline failed (exit $RC): $WHY"
fi
FILES=("$PART"/samba-backup-*.tar.bz2)
[[ -f ${FILES[0]} ]] || fail "samba-tool domain backup offline wrote no tarball: $(tail -2 "$DIR/backup.log" | one_line)"
NAME=${FILES[0]##*/}
mv "${FILES[0]}" "$KEEP/$NAME" || fail "cannot move the tarball into $KEEP"
rm -rf "$PART"
sync "$KEEP/$NAME"
SECONDS_US=$(($(now_us) - START))
for old in "$KEEP"/samba-backup-*.tar.bz2; do
    [[ $old == "$KEEP/$NAME" ]] || rm -f "$old"
done
event backup "$KEEP/$NAME	$(stat -c %s "$KEEP/$NAME")	$((SECONDS_US / 1000))"
event prepared
linger
