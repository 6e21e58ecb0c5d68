#!/bin/sh
# Start Apache Kafka (KRaft, one node) with SASL_SSL + SCRAM-SHA-512 (the kafka service).
#
# 1. server.properties from the KAFKA_* variables of docker-compose.yml (KAFKA_FOO_BAR
#    -> foo.bar; "__" -> "_", "___" -> "-"), plus what holds a secret, read from the
#    docker secrets: store passwords and the broker's own SCRAM login;
# 2. format the storage once, creating the SCRAM-SHA-512 users "admin" (the broker,
#    super user) and "dropship" (the workers) - KRaft has no ZooKeeper to hold them;
# 3. a client config for the health check; 4. exec the broker.
# The files holding secrets live in the container's /tmp only (mode 0600).
set -eu
umask 077
admin_pw=$(cat /run/secrets/kafka_admin_password)
worker_pw=$(cat /run/secrets/kafka_worker_password)
store_pw=$(cat /run/secrets/kafka_store_password)
conf=/tmp/server.properties

env | grep '^KAFKA_' | while IFS='=' read -r name value; do
    key=$(printf '%s' "${name#KAFKA_}" | tr 'A-Z' 'a-z' \
          | sed -e 's/___/-/g' -e 's/__/@/g' -e 's/_/./g' -e 's/@/_/g')
    printf '%s=%s\n' "$key" "$value"
done > "$conf"
cat >> "$conf" <<PROPS
ssl.keystore.password=$store_pw
ssl.key.password=$store_pw
ssl.truststore.password=$store_pw
listener.name.internal.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin_pw";
listener.name.host.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin_pw";
PROPS

/opt/kafka/bin/kafka-storage.sh format --ignore-formatted --cluster-id "$CLUSTER_ID" \
    --config "$conf" \
    --add-scram "SCRAM-SHA-512=[name=admin,password=$admin_pw]" \
    --add-scram "SCRAM-SHA-512=[name=dropship,password=$worker_pw]"

cat > /tmp/client.properties <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin_pw";
ssl.truststore.location=/certs/kafka.truststore.p12
ssl.truststore.type=PKCS12
ssl.truststore.password=$store_pw
PROPS

exec /opt/kafka/bin/kafka-server-start.sh "$conf"
