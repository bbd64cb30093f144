#!/bin/bash
# kafka-docker-run.sh - the broker, configured as the official apache/kafka
# image is: every KAFKA_* variable but the JVM's is a server property
# (KAFKA_LOG_DIRS -> log.dirs; `___` -> `-`, `__` -> `_`, `_` -> `.`), and
# CLUSTER_ID formats the first log directory once.
set -euo pipefail
conf=/opt/kafka/config/server.properties
: > "$conf"
for var in $(compgen -e); do
	case $var in
	KAFKA_HEAP_OPTS | KAFKA_JVM_PERFORMANCE_OPTS | KAFKA_OPTS | KAFKA_GC_LOG_OPTS | \
	KAFKA_LOG4J_* | KAFKA_JMX_* | KAFKA_VERSION | KAFKA_DEBUG | KAFKA_HOME) continue ;;
	KAFKA_*) ;;
	*) continue ;;
	esac
	key=$(printf '%s' "${var#KAFKA_}" | tr 'A-Z' 'a-z' |
		sed -e 's/___/-/g' -e 's/__/@/g' -e 's/_/./g' -e 's/@/_/g')
	printf '%s=%s\n' "$key" "${!var}" >> "$conf"
done
grep -q '^process.roles=' "$conf" || { echo "kafka: KAFKA_PROCESS_ROLES is not set (KRaft only)" >&2; exit 1; }
logdir=$(sed -n 's/^log.dirs=//p' "$conf" | cut -d, -f1)
if [ ! -f "${logdir:-/tmp/kraft-combined-logs}/meta.properties" ]; then
	: "${CLUSTER_ID:?CLUSTER_ID must be set for the first start}"
	/opt/kafka/bin/kafka-storage.sh format -t "$CLUSTER_ID" -c "$conf" --ignore-formatted
fi
# shellcheck disable=SC2086
exec java ${KAFKA_HEAP_OPTS:--Xmx1g -Xms1g} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
	-XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
	-Dlog4j.configuration=file:/opt/kafka/bin/log4j.properties \
	-cp '/opt/kafka/libs/*' kafka.Kafka "$conf"
