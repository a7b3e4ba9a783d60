# Sourced by the training experiment scripts: run_configs NAME... trains each named entry of CONFIGS (flags
# appended to COMMON) into OUT/NAME, skipping finished runs and resuming interrupted ones.
run_configs() {
  local name
  for name in "$@"; do
    [ -n "${CONFIGS[$name]:-}" ] || { echo "unknown configuration $name" >&2; exit 2; }
    if [ -f "$OUT/$name/headrank.json" ]; then echo "$name: done"; continue; fi
    local resume=()
    [ -f "$OUT/$name/checkpoints/last/trainer_state.json" ] && resume=(--resume)
    # shellcheck disable=SC2086
    .venv/bin/headrank train "${COMMON[@]}" ${CONFIGS[$name]} --out "$OUT/$name" "${resume[@]}"
  done
}
