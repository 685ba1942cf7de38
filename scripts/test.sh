#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: set-up included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# The RabbitMQ cluster tests need rabbitmq-server: installed here too, so that this
# command runs every test on a fresh machine, as CI does.
bash scripts/install-brokers.sh
export PATH="$PWD/.venv/bin:$PATH"
# Four workers on two cores: most of an integration test is waiting on real
# processes. MQCHAT_TEST_WORKERS=0 runs everything in this process.
exec .venv/bin/python -m pytest -n "${MQCHAT_TEST_WORKERS:-4}" --dist loadgroup "$@"
