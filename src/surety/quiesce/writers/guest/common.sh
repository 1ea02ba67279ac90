# surety: guest side of a writer, pushed through qemu-guest-agent for one
# backup and removed afterwards (nothing is installed in the guest).
#
# Usage: bash SCRIPT DIR WINDOW ARGS...   (DIR: a private directory on tmpfs)
# The host drives the script through files in DIR, never during the fs freeze
# (the agent refuses file commands then):
#   the script appends "EVENT<TAB>VALUE" lines to DIR/events;
#   the host creates DIR/go.STEP to let the script take STEP, or DIR/abort.
# Deadlines are enforced here as well: when the host goes silent for longer
# than the freeze window, the script releases the application by itself.
set -u
DIR=$1
WINDOW=$2
shift 2
SQLN=0
LEFT=$WINDOW
OUT=""

event() { printf '%s\t%s\n' "$1" "${2:-}" >>"$DIR/events"; }
fail() {
    event error "$*"
    exit 1
}
now_us() { echo "${EPOCHREALTIME/./}"; }

# wait_go STEP SECONDS: 0 when the host says go; 1 on abort or when SECONDS pass.
# The host may write into go.STEP the seconds left of the freeze window: $LEFT.
wait_go() {
    local until=$(($(now_us) + ${2%.*} * 1000000))
    while :; do
        if [[ -e $DIR/go.$1 ]]; then
            LEFT=$(<"$DIR/go.$1")
            LEFT=${LEFT:-$WINDOW}
            return 0
        fi
        [[ -e $DIR/abort ]] && { event aborted "$1"; return 1; }
        (($(now_us) >= until)) && { event expired "$1"; return 1; }
        sleep 0.01
    done
}

# sql_open CMD...: start the application's client as the held session
sql_open() {
    coproc SQL { exec "$@" 2>&1; }
}

# sql SECONDS STATEMENT: run STATEMENT in the held session; its output in $OUT.
# Fails with 124 when no answer comes in SECONDS or the host aborts (DIR/abort),
# with 1 when the client reported an error or went away.
sql() {
    local n=$((++SQLN)) line partial="" rc
    local until=$(($(now_us) + ${1%.*} * 1000000))
    OUT=""
    printf '%s\n%s\n' "$2" "$(sql_mark "$n")" >&"${SQL[1]}" || return 1
    while :; do
        IFS= read -r -t 0.05 line <&"${SQL[0]}"
        rc=$?
        if ((rc == 0)); then
            line=$partial$line partial=""
            if [[ $line == "@@surety-$n@@" ]]; then
                [[ $OUT != *ERROR* ]]
                return
            fi
            OUT+="$line"$'\n'
        elif ((rc > 128)); then
            partial+=$line
            [[ -e $DIR/abort ]] && return 124
            (($(now_us) >= until)) && return 124
        else
            return 1
        fi
    done
}

# after the last event: leave DIR to the host (it reads, then removes it);
# remove it ourselves if the host is gone
linger() {
    local i
    for ((i = 0; i < 600; i++)); do
        [[ -e $DIR/events ]] || exit 0
        sleep 0.2
    done
    rm -rf "$DIR"
}
