#!/bin/sh
# kafka-run-class.sh CLASS [ARGS...] - a Kafka tool on the image's jars, with
# a small heap and warnings only (the broker's own KAFKA_HEAP_OPTS is not
# for tools, which run beside it in the same container).
exec java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
	-Dlog4j.configuration=file:/opt/kafka/bin/tools-log4j.properties \
	-cp '/opt/kafka/libs/*' "$@"
