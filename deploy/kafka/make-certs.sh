#!/bin/sh
# Make the broker's TLS material once, into /certs (the kafka-certs volume), with the
# JDK's keytool of the apache/kafka image (run by the kafka-certs service):
#   ca.pem                 the development CA, for clients (DROPSHIP_KAFKA_SSL_CAFILE)
#   kafka.keystore.p12     the broker's key and certificate (CN=kafka, SAN kafka,
#                          localhost, 127.0.0.1), signed by the CA
#   kafka.truststore.p12   the CA, for the broker's own client side
# The stores are protected by the kafka_store_password secret; the CA key is deleted
# once the broker certificate is signed. Idempotent: existing material is kept.
set -eu
out=/certs
[ -s "$out/kafka.keystore.p12" ] && { echo "TLS material exists in $out"; exit 0; }
pw=$(cat /run/secrets/kafka_store_password)
san="SAN=dns:kafka,dns:localhost,ip:127.0.0.1"
cd "$out"
keytool -genkeypair -alias ca -dname "CN=dropship development CA" -keyalg RSA -keysize 3072 \
    -validity 825 -ext bc:c -storetype PKCS12 -keystore ca.p12 -storepass "$pw"
keytool -exportcert -rfc -alias ca -keystore ca.p12 -storepass "$pw" -file ca.pem
keytool -genkeypair -alias kafka -dname "CN=kafka" -keyalg RSA -keysize 3072 -validity 825 \
    -ext "$san" -storetype PKCS12 -keystore kafka.keystore.p12 -storepass "$pw"
keytool -certreq -alias kafka -keystore kafka.keystore.p12 -storepass "$pw" -file kafka.csr
keytool -gencert -alias ca -keystore ca.p12 -storepass "$pw" -infile kafka.csr \
    -outfile kafka.crt -rfc -validity 825 -ext "$san" -ext ku:c=digitalSignature,keyEncipherment \
    -ext eku=serverAuth
keytool -importcert -noprompt -alias ca -file ca.pem -keystore kafka.keystore.p12 -storepass "$pw"
keytool -importcert -alias kafka -file kafka.crt -keystore kafka.keystore.p12 -storepass "$pw"
keytool -importcert -noprompt -alias ca -file ca.pem -storetype PKCS12 \
    -keystore kafka.truststore.p12 -storepass "$pw"
rm -f ca.p12 kafka.csr kafka.crt
chown 1000:1000 kafka.keystore.p12 kafka.truststore.p12   # appuser of apache/kafka
chmod 0600 kafka.keystore.p12 kafka.truststore.p12
chmod 0644 ca.pem
echo "TLS material written to $out"
