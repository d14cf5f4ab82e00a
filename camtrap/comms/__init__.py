"""What leaves the daemon over MQTT: the topic and payload contract, the publisher, and
Home Assistant discovery."""
