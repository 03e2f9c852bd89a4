#!/bin/sh
# Container entry point. Without arguments it runs the Kezek service named by $SERVICE; `exec`
# makes nameko PID 1, so `docker stop` delivers SIGTERM to it and it stops gracefully.
# With arguments it runs them instead (the compose `migrate` job runs `kezek migrate`).
set -eu

if [ "$#" -gt 0 ]; then
    exec "$@"
fi

case "${SERVICE:-}" in
    registry|applications|queue|allocation|audit|gateway) ;;
    *)
        echo "docker-entrypoint: set SERVICE to registry, applications, queue, allocation," \
             "audit or gateway (got '${SERVICE:-}')" >&2
        exit 64
        ;;
esac

exec nameko run --config config.yaml "services.${SERVICE}.service"
