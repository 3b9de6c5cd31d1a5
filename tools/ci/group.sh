# group.sh - sourced by CI stages that start servers and clients: runs their driver in a process
# group of its own and, however the stage ends, stops the whole group so nothing outlives it.
# Set GROUP_WHAT (what the stage calls itself) before sourcing; set PGID once the driver runs.
PGID=""
group_cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$PGID" ] && kill -0 -- "-$PGID" 2>/dev/null; then
        log "stopping what the ${GROUP_WHAT:-stage} left running (process group $PGID)"
        kill -TERM -- "-$PGID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 -- "-$PGID" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL -- "-$PGID" 2>/dev/null || true
    fi
    exit "$rc"
}
trap group_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
