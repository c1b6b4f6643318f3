# Helpers for the local AWS emulator (the moto server), sourced by scripts/test and
# scripts/demo. The emulator is installed into .venv at the repository root, pinned.

MOTO_VERSION="5.2.5"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"

# Installs the pinned emulator into .venv (once; again when the pin changes).
install_emulator() {
    if [ -x "$VENV/bin/moto_server" ] &&
        "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('moto') != '$MOTO_VERSION')" 2>/dev/null; then
        return 0
    fi
    echo "Installing the local AWS emulator (moto[server]==$MOTO_VERSION) into .venv ..."
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
}

# The AWS CLI that the deploy scripts (deploy/scripts/) use, into .venv too (v1: PyPI has no v2), pinned
# with botocore equal to the emulator's; tests/deploy_stack.rs runs the steps with it.
AWSCLI_VERSION="1.46.3"
install_aws_cli() {
    if "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('awscli') != '$AWSCLI_VERSION')" 2>/dev/null; then
        return 0
    fi
    echo "Installing the AWS CLI (awscli==$AWSCLI_VERSION) into .venv ..."
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "awscli==$AWSCLI_VERSION"
}

# A free TCP port on 127.0.0.1.
free_port() {
    "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_emulator PORT LOGFILE: starts the emulator in the background, waits until it
# answers, and sets EMULATOR_PID. The caller stops it with stop_emulator.
start_emulator() {
    local port="$1" log="$2"
    "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
    EMULATOR_PID=$!
    for _ in $(seq 1 100); do
        if "$VENV/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/', timeout=1)" 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$EMULATOR_PID" 2>/dev/null; then
            echo "The emulator failed to start:" >&2
            cat "$log" >&2
            return 1
        fi
        sleep 0.2
    done
    echo "The emulator did not answer on port $port within 20 s" >&2
    return 1
}

stop_emulator() {
    if [ -n "${EMULATOR_PID:-}" ]; then
        kill "$EMULATOR_PID" 2>/dev/null || true
        wait "$EMULATOR_PID" 2>/dev/null || true
        EMULATOR_PID=""
    fi
}
