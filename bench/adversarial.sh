#!/usr/bin/env bash
# The adversarial suite: every command and the Python API fed hostile input (bench/adversarial.py has the
# cases and the checks: exit status 2 with one line and no traceback, no hang, no file of the user's changed).
#
#     bench/adversarial.sh                  # every case (about half an hour on 2 busy cores)
#     bench/adversarial.sh --only size/     # one category: own/ utf8/ size/ fifo/ dev/ wrong/ option/ api/ signal/
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${PYTHON:-python}" "$here/adversarial.py" "$@"
