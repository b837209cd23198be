# Sourced by scripts/test and scripts/demo: make .venv and install refit into it (with the
# dev tools and the optional extras the tests cover: tune, xgboost, lightgbm), reinstalling
# only when pyproject.toml changed since the last install.

step() { printf '\n==> %s\n' "$*" >&2; }

if [[ ! -x .venv/bin/python ]]; then
    step "create .venv"
    python3 -m venv .venv || {
        rm -rf .venv
        echo "scripts/test: python3 -m venv failed; on Debian: apt-get install python3-venv" >&2
        exit 1
    }
fi

# Reinstall only when pyproject.toml changed since the last install.
stamp=.venv/.refit-pyproject.sha256
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f $stamp || $(<"$stamp") != "$wanted" ]]; then
    step "pip install -e .[dev,tune,xgboost,lightgbm]"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
        -e ".[dev,tune,xgboost,lightgbm]" >&2
    echo "$wanted" >"$stamp"
fi

