#!/usr/bin/env bash
# What make test needs (scripts/install-deps.sh says what that is).
exec "$(dirname "${BASH_SOURCE[0]}")/install-deps.sh" test
