# Sourced by run.sh and ab.sh. noop_app DIR MESSAGES writes the end-to-end
# app to DIR: MESSAGES start tasks through a two-module pipeline. Stage 1
# forwards its body to stage 2 through the sink-tasks file; stage 2 does
# nothing. Both are POSIX sh, like the peers' script.
noop_app() {
  mkdir -p "$1/first" "$1/second"
  cat > "$1/first/run.sh" <<'S'
#!/bin/sh
echo "$1" > "$WORK_DIR/sink-tasks.txt"
S
  cat > "$1/second/run.sh" <<'S'
#!/bin/sh
echo "$1" > "$WORK_DIR/sink-tasks.txt.done"
S
  chmod +x "$1/first/run.sh" "$1/second/run.sh"
  seq 1 "$2" > "$1/start.txt"
  cat > "$1/app.yaml" <<'Y'
name: bench-noop
modules:
  first:
    base_image: host
    arguments: {code_path: ./first}
    parameters: {start_task: "FILE:start.txt"}
    sink_modules: second
  second:
    base_image: host
    arguments: {code_path: ./second}
Y
}
